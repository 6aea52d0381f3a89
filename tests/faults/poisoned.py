"""A policy with a bug (`policy._target_=tests.faults.poisoned.PolicyThatFails`). (Datasets
with NaN rows are refused by build() now: tests poison a built run's data instead.)"""

from __future__ import annotations

from esper.contracts import Decision, Observation
from esper.policy import NoPolicy


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
