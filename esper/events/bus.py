"""The bus keeps publishing off the hot path: publish() appends, flush() hands batches to sinks.

It keeps no history: a part that needs to remember events (the run record) is a sink. Sinks
that are not essential (W&B, the console) are written from a thread of their own
(`BackgroundSink`), so the training loop pays a queue put for them, not the write.
"""

from __future__ import annotations

import logging
from typing import Protocol, TypeVar

from esper.contracts import EventBase, RunRecord
from esper.events.background import BackgroundSink

T = TypeVar("T")

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where events go. `write` gets each flushed batch in publish order; `close` gets the
    finished run record once, after the last batch. An `essential` sink's failure fails the
    run; any other sink's is logged once, recorded in `EventBus.failures`, and the sink is
    dropped (a W&B outage never stops training)."""

    essential: bool

    def write(self, events: list[EventBase]) -> None: ...

    def close(self, record: RunRecord) -> None: ...


class EventBus:
    """Publishing appends to a list (the hot path: no I/O, no serialisation); the trainer
    flushes once an epoch, and each sink gets the epoch's events as one batch."""

    def __init__(self, sinks: list[Sink] | None = None, background: bool = True) -> None:
        self.sinks: list[Sink] = [
            BackgroundSink(s) if background and not getattr(s, "essential", True) else s
            for s in sinks or []
        ]
        self._pending: list[EventBase] = []
        self.failures: list[str] = []
        """`SinkName: error` for each non-essential sink that failed and was dropped."""

    def publish(self, event: EventBase) -> None:
        self._pending.append(event)

    def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        for sink in list(self.sinks):
            try:
                sink.write(batch)
            except Exception as exc:
                if getattr(sink, "essential", True):
                    raise
                self.drop(sink, exc)

    def find(self, kind: type[T]) -> T | None:
        """The sink of this type (unwrapped from its background thread), if there is one."""
        for sink in self.sinks:
            inner = getattr(sink, "inner", sink)
            if isinstance(inner, kind):
                if isinstance(sink, BackgroundSink):
                    sink.join_pending()
                return inner
        return None

    def drop(self, sink: Sink, exc: BaseException) -> None:
        """Log a non-essential sink's failure once and stop sending it events."""
        name = type(getattr(sink, "inner", sink)).__name__
        failure = f"{name}: {type(exc).__name__}: {exc}"
        log.error("%s; it is off for the rest of the run (events.jsonl goes on)", failure)
        self.failures.append(failure)
        self.sinks.remove(sink)

    def close(self, record: RunRecord) -> None:
        """Flush and close every sink; one failing sink does not stop the others from closing.
        An essential sink's error is raised after all are closed."""
        self.flush()
        errors: list[BaseException] = []
        for sink in list(self.sinks):
            try:
                sink.close(record)
            except Exception as exc:  # noqa: BLE001 - re-raised below after all sinks closed
                if not getattr(sink, "essential", True):
                    self.drop(sink, exc)
                    continue
                log.error("closing sink %s failed: %s", type(sink).__name__, exc)
                errors.append(exc)
        if errors:
            raise errors[0]
