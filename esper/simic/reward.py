"""What an episode's decisions earned: the validation accuracy they added over the same run
without growth, less a cost for the parameters (and FLOPs) they added. Never the test split.

    reward = (final val accuracy - final val accuracy of the host alone, same task and seed)
             - per_1k_params * (parameters added / 1,000)
             - per_1k_flops * (forward FLOPs a sample added / 1,000)

The cost is in absolute parameters, not in host-sizes: a researcher pays for parameters, and
a cost relative to the host made every seed on a 114-parameter spirals MLP look enormous and
every seed on a 1,900-parameter CNN look free (experiments/gnn_policy.md).

It is paid at the episode's last decision (earlier decisions get it through the advantage),
so that only what the decisions changed by the end counts, not noise between epochs.
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
    added_flops: int = 0,
    per_1k_params: float = 0.05,
    per_1k_flops: float = 0.0,
) -> RewardTerms:
    """See the module docstring."""
    gain = val_accuracy - baseline_val_accuracy
    param_penalty = per_1k_params * added_params / 1000
    flop_penalty = per_1k_flops * added_flops / 1000
    return RewardTerms(gain, param_penalty, flop_penalty, gain - param_penalty - flop_penalty)


def step_rewards(steps: int, reward: float) -> list[float]:
    """Zero at every decision but the last, which is paid the episode's reward."""
    return [0.0] * (steps - 1) + [reward] if steps else []
