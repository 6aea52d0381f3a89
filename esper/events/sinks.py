"""Where events go: a JSONL file and the console (W&B: `esper.events.wandb_sink`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, events: list[EventBase]) -> None:
        self._file.write("".join(json.dumps(event_record(e)) + "\n" for e in events))
        self._file.flush()

    def close(self, record: RunRecord) -> None:
        self._file.close()


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
