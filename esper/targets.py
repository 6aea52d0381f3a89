"""What a config group's `_target_` must be: the contracts between conf/ and the code.

Hydra instantiates these from a group's node; `app.build` checks what comes back against them
and fails before training, naming the group, when a user's own target breaks one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from torch import nn

from esper.data import DataSplits
from esper.events import Sink


class DatasetFactory(Protocol):
    """`dataset._target_`: called with the group's other keys; returns the three splits."""

    def __call__(self, **options: Any) -> DataSplits: ...


class HostFactory(Protocol):
    """`model._target_`: called with the group's keys (less `sites`) and the dataset's shapes."""

    def __call__(
        self, *, input_shape: tuple[int, ...], num_classes: int, **options: Any
    ) -> nn.Module: ...


class LoggerFactory(Protocol):
    """`logger._target_` (instantiated `_partial_`): a sink for the run's events."""

    def __call__(self, *, run_dir: str | Path, config: dict[str, Any]) -> Sink: ...
