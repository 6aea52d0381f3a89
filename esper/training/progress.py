"""The console while a run trains: one progress bar (epoch, loss, val accuracy, each slot's
state) with log lines written above it instead of through it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from esper.contracts import SeedState
from esper.seeds import SeedSlot
from esper.training.steps import SplitMetrics

STATE_LETTERS = {
    SeedState.DORMANT: ".",
    SeedState.GERMINATED: "g",
    SeedState.TRAINING: "T",
    SeedState.BLENDING: "B",
    SeedState.FOSSILIZED: "F",
    SeedState.CULLED: "x",
}
"""One letter a slot, in slot order: `seeds=T.F` is a training seed, a dormant slot and a
fossilized seed."""


def postfix(train: SplitMetrics, val: SplitMetrics, slots: Iterable[SeedSlot]) -> str:
    states = "".join(STATE_LETTERS[slot.state] for slot in slots)
    return f"loss={train.loss:.3f} val_acc={val.accuracy:.3f} seeds={states}"


@contextlib.contextmanager
def epoch_bar(enabled: bool, start: int, total: int) -> Iterator[tqdm[int]]:
    """The epochs to run, as a bar when `enabled` (`trainer.progress`); while it is open, log
    records from the console handlers go through `tqdm.write`, so they never tear the bar."""
    bar = tqdm(
        range(start, total),
        initial=start,
        total=total,
        desc="epochs",
        disable=not enabled,
        dynamic_ncols=True,
        leave=False,
    )
    try:
        if enabled:
            with logging_redirect_tqdm():
                yield bar
        else:
            yield bar
    finally:
        bar.close()


def quiet_console() -> None:
    """`trainer.quiet`: console handlers show warnings and errors only; file handlers (the
    job's .log next to its summary.json) keep every line."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)
