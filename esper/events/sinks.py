"""Where events go: a JSONL file and the console (W&B: `esper.events.wandb_sink`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from esper.atomic import cannot_write
from esper.contracts import Adaptation, EventBase, RunRecord

log = logging.getLogger(__name__)


def event_record(event: EventBase) -> dict[str, Any]:
    return event.model_dump(mode="json", by_alias=True)


class JsonlSink:
    """events.jsonl: every event, one JSON object a line, appended in batches. Essential: a
    run whose event log cannot be written fails (with the reason)."""

    essential = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _drop_partial_line(self.path)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise cannot_write(self.path, exc, "nothing was run") from None

    def write(self, events: list[EventBase]) -> None:
        try:
            self._file.write("".join(json.dumps(event_record(e)) + "\n" for e in events))
            self._file.flush()
        except OSError as exc:  # a full disk: the lines before are whole, the last may not be
            raise cannot_write(self.path, exc, "the events before are kept") from None

    def close(self, record: RunRecord) -> None:
        try:
            self._file.close()
        except OSError as exc:  # what a failed write left in the buffer
            raise cannot_write(self.path, exc, "the events before are kept") from None


def _drop_partial_line(path: Path) -> None:
    """A run resumed in place appends to its events.jsonl: a last line that a full disk or a
    kill cut short would join the first new event, and both would be unreadable."""
    if not path.is_file():
        return
    with path.open("rb+") as handle:
        size = handle.seek(0, 2)
        tail = min(size, 1 << 20)  # an event is a line of at most a few KiB
        handle.seek(size - tail)
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(size - tail + data.rfind(b"\n") + 1)
            log.warning("%s ended in a line cut short (a full disk, a kill): removed", path)


class ConsoleSink:
    """Logs adaptations as they happen (INFO, through Python logging; the progress bar keeps
    them above itself). Not essential: a failure is logged once and the run goes on."""

    essential = False

    def write(self, events: list[EventBase]) -> None:
        for e in events:
            if isinstance(e, Adaptation):
                log.info(
                    "[epoch %3d] %s: %s -> %s (%s) %s",
                    e.epoch,
                    e.slot,
                    e.from_state.value,
                    e.to_state.value,
                    e.blueprint or "-",
                    e.reason,
                )

    def close(self, record: RunRecord) -> None:
        return None
