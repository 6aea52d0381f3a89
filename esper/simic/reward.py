"""What an episode's decisions earned: the validation accuracy they added over the same run
without growth, less a cost for the parameters they added. Never the test split.

    reward = (final val accuracy - final val accuracy of the host alone, same task and seed)
             - param_cost * (parameters added / host parameters)
             - flop_cost * (forward FLOPs added / host forward FLOPs)

It is paid at the episode's last decision (earlier decisions get it through GAE), so that
only what the decisions changed by the end counts, not noise between epochs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RewardTerms:
    """The reward and its parts, as logged."""

    gain: float
    """Final val accuracy minus the host alone's."""
    param_penalty: float
    flop_penalty: float
    total: float


def episode_reward(
    val_accuracy: float,
    baseline_val_accuracy: float,
    added_params: int,
    host_params: int,
    added_flops: int = 0,
    host_flops: int = 1,
    param_cost: float = 0.01,
    flop_cost: float = 0.0,
) -> RewardTerms:
    """See the module docstring. Costs are per doubling of the host: adding as many
    parameters as the host has costs `param_cost` accuracy."""
    gain = val_accuracy - baseline_val_accuracy
    param_penalty = param_cost * added_params / max(1, host_params)
    flop_penalty = flop_cost * added_flops / max(1, host_flops)
    return RewardTerms(gain, param_penalty, flop_penalty, gain - param_penalty - flop_penalty)


def step_rewards(steps: int, terms: RewardTerms) -> list[float]:
    """Zero at every decision but the last, which is paid the episode's reward."""
    return [0.0] * (steps - 1) + [terms.total] if steps else []
