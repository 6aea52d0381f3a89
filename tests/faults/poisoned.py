"""Datasets with injected faults, for `dataset._target_=tests.faults.poisoned.<name>`, and a
policy with a bug (`policy._target_=tests.faults.poisoned.PolicyThatFails`)."""

from __future__ import annotations

from typing import Any

from esper.contracts import Decision, Observation
from esper.data import DataSplits, spirals
from esper.policy import NoPolicy


def spirals_with_nan_rows(rows: int = 1, **options: Any) -> DataSplits:
    """Spirals whose first `rows` training inputs are NaN: each epoch, the batches holding them
    give a non-finite loss (a transient fault: the other batches are fine)."""
    data = spirals(**options)
    data.train.x[:rows] = float("nan")
    return data


class PolicyThatFails(NoPolicy):
    """A policy with a bug: it raises at the control step of epoch `at_epoch` (under ddp, on
    rank 0 alone, which decides for every rank)."""

    name = "fails"

    def __init__(self, at_epoch: int = 2) -> None:
        self.at_epoch = at_epoch

    def decide(self, obs: Observation) -> list[Decision]:
        if obs.epoch >= self.at_epoch:
            raise ZeroDivisionError("a bug in the policy")
        return super().decide(obs)
