"""Where prediction requests go: the local outbox (embedded default) or Pub/Sub.

A transport publishes a batch and reports, per message, whether the publish was
acknowledged; it never raises for a single message's failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

REQUEST_TOPIC = "prediction-request"
PHASE4_TOPIC = "nba-phase4-precompute-complete"


@dataclass(frozen=True)
class OutgoingMessage:
    request_id: str
    data: bytes
    attributes: dict[str, str]


@dataclass(frozen=True)
class PublishResult:
    request_id: str
    message_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.message_id is not None and self.error is None


class Transport(Protocol):
    kind: str

    def publish(
        self, topic: str, messages: Sequence[OutgoingMessage], *, timeout: float
    ) -> list[PublishResult]:
        """Publish all messages; one result per message, in order."""

    def close(self) -> None:
        """Release clients."""
