"""The bus keeps publishing off the hot path: publish() appends, flush() hands batches to sinks."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from esper.contracts import EventBase

log = logging.getLogger(__name__)


class Sink(Protocol):
    def write(self, events: list[EventBase]) -> None: ...

    def close(self, summary: dict[str, Any]) -> None: ...


class EventBus:
    def __init__(self, sinks: list[Sink] | None = None) -> None:
        self.sinks: list[Sink] = list(sinks or [])
        self._pending: list[EventBase] = []
        self.history: list[EventBase] = []

    def publish(self, event: EventBase) -> None:
        self._pending.append(event)

    def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self.history.extend(batch)
        for sink in self.sinks:
            sink.write(batch)

    def close(self, summary: dict[str, Any]) -> None:
        """Flush and close every sink; one failing sink does not stop the others from closing."""
        self.flush()
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close(summary)
            except BaseException as exc:  # noqa: BLE001 - re-raised below after all sinks closed
                log.error("closing sink %s failed: %s", type(sink).__name__, exc)
                errors.append(exc)
        if errors:
            raise errors[0]

    def of_kind(self, kind: str) -> list[EventBase]:
        return [e for e in self.history if getattr(e, "kind", None) == kind]
