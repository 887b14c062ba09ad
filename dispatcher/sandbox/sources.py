"""Where the reference worker's requests come from: the local outbox table or a Pub/Sub
streaming pull, behind one pull / ack / nack / close interface.

`Warehouses` holds the worker's warehouse handle: opened on demand and released while
idle (a DuckDB file admits one process at a time).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..logs import log
from ..transport import REQUEST_TOPIC
from ..warehouse import Warehouse, connect
from .predict import Delivery

if TYPE_CHECKING:
    from ..warehouse_duckdb import DuckDBWarehouse

#: After the first message of a batch, how long to wait for the batch to fill.
BATCH_LINGER_SECONDS = 0.05
#: Bound on shutting the streaming pull down.
SHUTDOWN_TIMEOUT = 10.0


class SourceError(RuntimeError):
    """The source cannot deliver any more (the streaming pull stopped)."""


class Warehouses:
    """The prediction warehouse and the DuckDB file of the local outbox, opened on
    demand; DuckDB handles are released while idle (the file admits one process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._warehouse: Warehouse | None = None

    def warehouse(self) -> Warehouse:
        if self._warehouse is None:
            self._warehouse = connect(self.settings)
        return self._warehouse

    def outbox(self) -> DuckDBWarehouse:
        """The local outbox: the DuckDB warehouse's own (a clear error on BigQuery)."""
        return self.warehouse().outbox()

    def release_idle(self) -> None:
        """Close the warehouse while idle: a DuckDB file admits one process at a time."""
        if self._warehouse is not None:
            self._warehouse.close()
            self._warehouse = None

    def close(self) -> None:
        self.release_idle()
        if self._warehouse is not None:
            self._warehouse.close()
            self._warehouse = None


class LocalSource:
    """The outbox table: pull unacknowledged rows, ack them after the write."""

    def __init__(self, handles: Warehouses) -> None:
        self.handles = handles

    def pull(self, max_messages: int, wait: float) -> list[Delivery]:
        from ..transport_local import pull_outbox

        rows = pull_outbox(self.handles.outbox(), REQUEST_TOPIC, max_messages)
        if not rows:
            self.handles.release_idle()  # before sleeping: others may open the file meanwhile
            time.sleep(wait)
            return []
        return [Delivery(row["data"], row["message_id"]) for row in rows]

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        from ..transport_local import ack_outbox

        ack_outbox(self.handles.outbox(), [d.message_id for d in deliveries])

    def nack(self, deliveries: Iterable[Delivery]) -> None:
        """Unacknowledged rows are pulled again: nothing to do."""

    def close(self) -> None:
        """The handles belong to run_worker."""


class PubSubSource:
    """A streaming pull: the library's callback threads put messages on a queue, the
    worker's thread drains it in batches and acks after each write."""

    def __init__(
        self, project: str, subscription: str, batch_size: int, *, credentials: Any = None
    ) -> None:
        """``credentials``: a keyfile's service account (Settings.pubsub_credentials);
        None: Application Default Credentials, or none with the emulator."""
        from google.cloud import pubsub_v1

        from ..transport_pubsub import subscription_path

        path = (
            subscription
            if subscription.startswith("projects/")
            else subscription_path(project, subscription)
        )
        self._queue: queue.Queue[Any] = queue.Queue()
        self._subscriber = pubsub_v1.SubscriberClient(
            **({} if credentials is None else {"credentials": credentials})
        )
        self._future = self._subscriber.subscribe(
            path,
            callback=self._queue.put,
            flow_control=pubsub_v1.types.FlowControl(max_messages=max(batch_size * 2, 1)),
        )
        self.path = path

    def _check(self) -> None:
        if self._future.done() and not self._future.cancelled():
            exc = self._future.exception(timeout=0)
            raise SourceError(f"streaming pull on {self.path} stopped: {exc}")

    def pull(self, max_messages: int, wait: float) -> list[Delivery]:
        self._check()
        try:
            first = self._queue.get(timeout=wait)
        except queue.Empty:
            self._check()
            return []
        messages = [first]
        deadline = time.monotonic() + BATCH_LINGER_SECONDS
        while len(messages) < max_messages:
            remaining = deadline - time.monotonic()
            try:
                messages.append(
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return [Delivery(m.data, m.message_id, m) for m in messages]

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            delivery.handle.ack()

    def nack(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            delivery.handle.nack()

    def _drain(self) -> list[Any]:
        messages = []
        while True:
            try:
                messages.append(self._queue.get_nowait())
            except queue.Empty:
                return messages

    def _half_close(self) -> None:
        """End the request stream, as a client that is done does.

        The Pub/Sub emulator never forgets a streaming pull the client cancelled (which
        is how the library stops one): it keeps handing that dead stream messages, which
        then vanish for the stream's 60 s ack deadline, again and again. It does drop a
        stream the client half-closes. The library has no public way to do that, hence
        the private attributes; if they are gone this is skipped and cancel() follows.
        """
        try:
            manager = self._future._StreamingPullFuture__manager
            manager._rpc._request_queue.put(None)
        except Exception:
            return
        try:  # the server completes the stream at once; the manager then shuts down
            self._future.result(timeout=2.0)
        except Exception:
            pass

    def close(self) -> None:
        """Hand back what was not processed, end the stream (acks queued with the
        library are flushed on the way down), close the channel; each step bounded."""
        for message in self._drain():
            message.nack()
        self._half_close()
        self._future.cancel()
        try:
            self._future.result(timeout=SHUTDOWN_TIMEOUT)
        except Exception:  # cancelled, timed out, or the stream had already failed
            pass
        late = self._drain()  # arrived while the stream was ending: its nack path is gone
        try:
            if late:
                self._subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.path,
                        "ack_ids": [m.ack_id for m in late],
                        "ack_deadline_seconds": 0,
                    },
                    timeout=SHUTDOWN_TIMEOUT,
                )
        except Exception as exc:  # they come back once their ack deadline passes
            log("WARNING", f"could not hand back {len(late)} messages: {exc}",
                subscription=self.path)  # fmt: skip
        finally:
            try:
                self._subscriber.close()
            except Exception:
                pass
