"""Datasets with injected faults, for `dataset._target_=tests.faults.poisoned.<name>`."""

from __future__ import annotations

from typing import Any

from esper.data import DataSplits, spirals


def spirals_with_nan_rows(rows: int = 1, **options: Any) -> DataSplits:
    """Spirals whose first `rows` training inputs are NaN: each epoch, the batches holding them
    give a non-finite loss (a transient fault: the other batches are fine)."""
    data = spirals(**options)
    data.train.x[:rows] = float("nan")
    return data
