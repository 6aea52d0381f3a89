"""PPO for the GNN policy: advantages (group-relative, or GAE over the value head), then a
clipped-objective update.

Hand-written rather than torchrl's ClipPPOLoss: our action is a factored, masked choice
(operation, then slot, then blueprint) over a graph whose size varies from step to step, which
torchrl's TensorDict-batched losses do not take without a custom distribution and padding;
the loss itself is the ten lines below (the same objective: clipped ratio, value loss, entropy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from esper.policy.gnn import Step, masked
from esper.policy.gnn_net import PolicyNet
from esper.policy.masks import OPERATIONS

GERMINATE = OPERATIONS.index("germinate")


def gae(rewards: Sequence[float], values: Sequence[float], gamma: float, lam: float) -> list[float]:
    """Generalised advantage estimates for one finished episode (the value after it is 0)."""
    advantages = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


def group_advantages(rewards: Sequence[float], groups: Sequence[int]) -> list[float]:
    """Each episode's reward less the mean reward of the other episodes of its group (same
    task, host and seed; leave-one-out, so an episode is not its own baseline). What the host
    and seed would have earned anyway cancels; what is left is what the decisions changed."""
    members: dict[int, list[float]] = {}
    for reward, group in zip(rewards, groups, strict=True):
        members.setdefault(group, []).append(reward)
    advantages = []
    for reward, group in zip(rewards, groups, strict=True):
        others = len(members[group]) - 1
        if others == 0:
            raise ValueError(f"group {group} has one episode: no baseline to compare it with")
        advantages.append(reward - (sum(members[group]) - reward) / others)
    return advantages


def _categorical(logits: Tensor, mask: Tensor, index: int) -> tuple[Tensor, Tensor]:
    log_probs = torch.log_softmax(masked(logits, mask), dim=-1)
    probs = log_probs.exp()
    entropy = -(probs * log_probs.masked_fill(~mask, 0.0)).sum()
    return log_probs[index], entropy


def evaluate(net: PolicyNet, step: Step) -> tuple[Tensor, Tensor, Tensor]:
    """Log-probability of the step's decision under `net`, the entropy, and the value."""
    heads = net(step.x, step.edge_index, step.u, step.slot_index, step.blueprints)
    masks = step.masks
    log_prob, entropy = _categorical(heads.operation[0], masks.operation, step.operation)
    if step.slot >= 0:
        lp, ent = _categorical(heads.slot, masks.slot[step.operation], step.slot)
        log_prob, entropy = log_prob + lp, entropy + ent
    if step.operation == GERMINATE:
        lp, ent = _categorical(
            heads.blueprint[step.slot], masks.blueprint[step.slot], step.blueprint
        )
        log_prob, entropy = log_prob + lp, entropy + ent
    return log_prob, entropy, heads.value[0]


@dataclass(frozen=True)
class PPOSettings:
    clip: float = 0.2
    epochs: int = 4
    minibatch: int = 64
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    max_grad_norm: float = 0.5


@dataclass(frozen=True)
class UpdateStats:
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float
    explained_variance: float


def explained_variance(predicted: Tensor, target: Tensor) -> float:
    variance = target.var()
    return float("nan") if variance == 0 else float(1 - (target - predicted).var() / variance)


def update(
    net: PolicyNet,
    optimizer: torch.optim.Optimizer,
    steps: Sequence[Step],
    advantages: Sequence[float],
    returns: Sequence[float],
    settings: PPOSettings,
    generator: torch.Generator,
) -> UpdateStats:
    """One PPO update over the steps of several episodes (minibatches in a seeded order)."""
    adv = torch.tensor(advantages)
    if len(adv) > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ret = torch.tensor(returns)
    old = torch.tensor([s.log_prob for s in steps])
    sums = {"policy": 0.0, "value": 0.0, "entropy": 0.0, "kl": 0.0, "clipped": 0.0}
    batches = 0
    net.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(steps), generator=generator)
        for start in range(0, len(steps), settings.minibatch):
            index = order[start : start + settings.minibatch]
            evaluated = [evaluate(net, steps[i]) for i in index.tolist()]
            log_prob = torch.stack([e[0] for e in evaluated])
            entropy = torch.stack([e[1] for e in evaluated]).mean()
            value = torch.stack([e[2] for e in evaluated])
            ratio = (log_prob - old[index]).exp()
            clipped = ratio.clamp(1 - settings.clip, 1 + settings.clip)
            policy_loss = -torch.min(ratio * adv[index], clipped * adv[index]).mean()
            value_loss = (value - ret[index]).pow(2).mean()
            loss = policy_loss + settings.value_coef * value_loss - settings.entropy_coef * entropy
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), settings.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                sums["policy"] += float(policy_loss)
                sums["value"] += float(value_loss)
                sums["entropy"] += float(entropy)
                sums["kl"] += float((old[index] - log_prob).mean())
                sums["clipped"] += float(((ratio - 1).abs() > settings.clip).float().mean())
            batches += 1
    net.eval()
    with torch.no_grad():
        values = torch.stack([evaluate(net, s)[2] for s in steps])
    n = max(1, batches)
    return UpdateStats(
        sums["policy"] / n,
        sums["value"] / n,
        sums["entropy"] / n,
        sums["kl"] / n,
        sums["clipped"] / n,
        explained_variance(values, ret),
    )
