"""A sink written from a thread of its own, so that a slow sink (W&B: about 0.3 ms a row plus
its keys) costs the training loop a queue put, not the write.

Batches reach the inner sink in flush order. An error in the thread is kept and handed to
the bus at its next flush or at close, which logs it once and drops the sink, as for a sink
written inline. `close` drains the queue, joins the thread, then closes the inner sink in the
caller's thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from esper.contracts import EventBase, RunRecord

_DONE = object()


class BackgroundSink:
    essential = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._drain, name=f"esper-{type(inner).__name__}", daemon=True
        )
        self._thread.start()

    def _drain(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is _DONE:
                return
            if isinstance(batch, threading.Event):
                batch.set()
                continue
            if self.error is not None:
                continue  # failed: the bus drops this sink at its next flush
            try:
                self.inner.write(batch)
            except Exception as exc:  # noqa: BLE001 - reported by the bus, once
                self.error = exc

    def write(self, events: list[EventBase]) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(events)

    def join_pending(self) -> None:
        """Wait until every batch put so far is written; the thread goes on."""
        if self._thread.is_alive():
            written = threading.Event()
            self._queue.put(written)
            written.wait()

    def join(self) -> None:
        """Wait until every batch put so far is written (or the sink failed)."""
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()

    def close(self, record: RunRecord) -> None:
        self.join()
        if self.error is not None:
            raise self.error
        self.inner.close(record)
