"""Google Cloud Pub/Sub transport (production), also run against the emulator.

``PUBSUB_EMULATOR_HOST`` is honoured by the client library itself (read when a client
is created). Credentials: those given (a keyfile's service account, see
Settings.pubsub_credentials), else Application Default Credentials; with the emulator
the library uses none. google.cloud.pubsub_v1 takes ~0.9 s to import, so it is imported only
when a transport or helper is actually built, never at CLI start-up.

Time is bounded everywhere: the library's default publish retry deadline is 600 s, so
each publish gets an explicit ``Retry`` (deadline ``publish_timeout``) and a per-RPC
``timeout``; the futures are gathered at the end against one overall deadline; the
admin helpers pass ``timeout`` and a bounded ``Retry`` on every call.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from .transport import OutgoingMessage, PublishResult

# What the library itself retries on publish (its default policy), minus the 600 s.
_RETRYABLE = (
    "Aborted",
    "Cancelled",
    "DeadlineExceeded",
    "InternalServerError",
    "ResourceExhausted",
    "ServiceUnavailable",
    "Unknown",
)


def topic_path(project: str, topic: str) -> str:
    return f"projects/{project}/topics/{topic}"


def subscription_path(project: str, subscription: str) -> str:
    return f"projects/{project}/subscriptions/{subscription}"


def _error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _credentials(credentials: Any) -> dict[str, Any]:
    """A client's credentials keyword: only when given (else the library finds ADC)."""
    return {} if credentials is None else {"credentials": credentials}


def bounded_retry(deadline: float):
    """A google.api_core Retry for the transient publish errors, giving up after ``deadline`` s."""
    from google.api_core import exceptions, retry

    return retry.Retry(
        predicate=retry.if_exception_type(*(getattr(exceptions, n) for n in _RETRYABLE)),
        initial=0.1,
        maximum=min(2.0, max(deadline / 2, 0.1)),
        multiplier=2.0,
        timeout=deadline,
    )


class PubSubTransport:
    """Batched publishes through one PublisherClient per transport instance.

    ``publish_timeout`` bounds each batch's retries (the library's Retry deadline) and
    each RPC attempt. ``publish(..., timeout=T)`` bounds the whole call: a message not
    acknowledged within T is reported failed ("outcome unknown": it may still land;
    request_id lets consumers drop the duplicate a later retry would make).
    """

    kind = "pubsub"

    def __init__(
        self,
        project: str,
        *,
        batch_max_messages: int = 1000,
        # Full batches go at once; the timer only sends a part-filled one, e.g. a
        # trigger's last. 50 ms would make a 45,000-message backfill a few % faster and
        # every trigger about 50 ms slower: the event path is where people wait.
        batch_max_latency: float = 0.01,
        publish_timeout: float = 10.0,
        credentials: Any = None,
    ) -> None:
        if not project:
            raise ValueError("PubSubTransport needs a GCP project (DISPATCHER_GCP_PROJECT)")
        if publish_timeout <= 0:
            raise ValueError("publish_timeout must be positive")
        from google.cloud import pubsub_v1

        self.project = project
        self.publish_timeout = float(publish_timeout)
        self.batch_settings = pubsub_v1.types.BatchSettings(
            max_messages=int(batch_max_messages), max_latency=float(batch_max_latency)
        )
        # Retry and RPC timeout set once for the client: passed with every message they
        # cost about 10 % of a large publish.
        self._retry = bounded_retry(self.publish_timeout)
        self._publisher = pubsub_v1.PublisherClient(
            batch_settings=self.batch_settings,
            publisher_options=pubsub_v1.types.PublisherOptions(
                retry=self._retry, timeout=self.publish_timeout
            ),
            **_credentials(credentials),
        )
        self._closed = False

    def topic_path(self, topic: str) -> str:
        return topic_path(self.project, topic)

    def publish(
        self, topic: str, messages: Sequence[OutgoingMessage], *, timeout: float | None = None
    ) -> list[PublishResult]:
        """Publish every message (batched), then gather the futures; one result each, in order.

        Never raises for a message's failure: a synchronous rejection (bad attribute,
        message too large, stopped publisher) or a failed/unfinished future becomes
        that message's error.
        """
        return self.submit(topic, messages, timeout=timeout).results()

    def submit(
        self, topic: str, messages: Sequence[OutgoingMessage], *, timeout: float | None = None
    ) -> SubmittedBatch:
        """Hand every message to the publisher's background batches and return at once;
        `results()` on the returned batch waits for the acknowledgements. Lets a caller
        prepare the next batch while this one is on the wire."""
        overall = self.publish_timeout if timeout is None else float(timeout)
        if overall <= 0:
            raise ValueError("timeout must be positive")
        rpc_deadline = min(self.publish_timeout, overall)
        # The client's own retry and timeout unless this call is bounded tighter.
        bounds: dict[str, Any] = (
            {"retry": bounded_retry(rpc_deadline), "timeout": rpc_deadline}
            if rpc_deadline < self.publish_timeout
            else {}
        )
        path = self.topic_path(topic)
        deadline = time.monotonic() + overall
        publish = self._publisher.publish

        pending: list[tuple[OutgoingMessage, Any]] = []
        for message in messages:
            try:
                future = publish(path, message.data, **bounds, **message.attributes)
            except Exception as exc:  # TypeError, ValueError, RuntimeError from the library
                pending.append((message, exc))
            else:
                pending.append((message, future))
        return SubmittedBatch(pending, deadline, overall)

    def close(self) -> None:
        """Flush what is left. stop() does not block; the channel is left to the client's
        finaliser because a batch thread may still be retrying on it."""
        if self._closed:
            return
        self._closed = True
        try:
            self._publisher.stop()
        except Exception:  # already stopped, or a channel already gone
            pass

    def __enter__(self) -> PubSubTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SubmittedBatch:
    """Messages handed to the publisher; `results()` gathers one result per message."""

    def __init__(
        self, pending: list[tuple[OutgoingMessage, Any]], deadline: float, overall: float
    ) -> None:
        self._pending = pending
        self._deadline = deadline
        self._overall = overall

    def results(self) -> list[PublishResult]:
        results: list[PublishResult] = []
        for message, future in self._pending:
            if isinstance(future, BaseException):
                results.append(PublishResult(message.request_id, error=_error(future)))
            else:
                results.append(_gather(message, future, self._deadline, self._overall))
        return results


def _gather(message: OutgoingMessage, future: Any, deadline: float, overall: float):
    remaining = max(deadline - time.monotonic(), 0.0)
    try:
        message_id = future.result(timeout=remaining)
    except TimeoutError:
        return PublishResult(
            message.request_id,
            error=f"TimeoutError: no acknowledgement within {overall:g} s (outcome unknown)",
        )
    except Exception as exc:  # NotFound, RetryError, DeadlineExceeded, ...
        return PublishResult(message.request_id, error=_error(exc))
    if not message_id:
        return PublishResult(message.request_id, error="publish returned no message id")
    return PublishResult(message.request_id, message_id=str(message_id))


# --- admin helpers (deploy scripts, local runs, tests) -----------------------------------


def ensure_topics(
    project: str, topics: Iterable[str], *, timeout: float = 10.0, credentials: Any = None
) -> list[str]:
    """Create each topic unless it exists; returns their paths. Each call bounded by timeout."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient(**_credentials(credentials))
    paths = []
    try:
        for topic in topics:
            path = topic_path(project, topic)
            try:
                publisher.create_topic(
                    request={"name": path}, timeout=timeout, retry=bounded_retry(timeout)
                )
            except exceptions.AlreadyExists:
                pass
            paths.append(path)
    finally:
        publisher.transport.close()
    return paths


def ensure_subscription(
    project: str,
    topic: str,
    subscription: str,
    ack_deadline: int = 60,
    *,
    timeout: float = 10.0,
    credentials: Any = None,
) -> str:
    """Create a pull subscription on topic unless it exists; returns its path."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient(**_credentials(credentials))
    path = subscription_path(project, subscription)
    try:
        subscriber.create_subscription(
            request={
                "name": path,
                "topic": topic_path(project, topic),
                "ack_deadline_seconds": int(ack_deadline),
            },
            timeout=timeout,
            retry=bounded_retry(timeout),
        )
    except exceptions.AlreadyExists:
        pass
    finally:
        subscriber.close()
    return path
