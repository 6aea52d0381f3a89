"""The bus keeps publishing off the hot path: publish() appends, flush() hands batches to sinks.

It keeps no history: a part that needs to remember events (the run record) is a sink.
"""

from __future__ import annotations

import logging
from typing import Protocol

from esper.contracts import EventBase, RunRecord

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where events go. `write` gets each flushed batch in publish order; `close` gets the
    finished run record once, after the last batch."""

    def write(self, events: list[EventBase]) -> None: ...

    def close(self, record: RunRecord) -> None: ...


class EventBus:
    def __init__(self, sinks: list[Sink] | None = None) -> None:
        self.sinks: list[Sink] = list(sinks or [])
        self._pending: list[EventBase] = []

    def publish(self, event: EventBase) -> None:
        self._pending.append(event)

    def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        for sink in self.sinks:
            sink.write(batch)

    def close(self, record: RunRecord) -> None:
        """Flush and close every sink; one failing sink does not stop the others from closing."""
        self.flush()
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close(record)
            except BaseException as exc:  # noqa: BLE001 - re-raised below after all sinks closed
                log.error("closing sink %s failed: %s", type(sink).__name__, exc)
                errors.append(exc)
        if errors:
            raise errors[0]
