"""Imitation before PPO: the GNN policy first learns to decide as a teacher policy does.

Why: PPO from initial weights has to find good timing by sampling, and at a low parameter price
it did not find the hand-tuned early schedule (experiments/gnn_policy.md: the 0.002 run). Started
from the teacher's decisions, PPO refines a policy that already grows as well as the teacher and
is rewarded for what it changes from there (the same clipped objective; a standard warm start).

`simic.imitate.teacher` names the teacher as run overrides (`policy=heuristic
policy.patience=1 ...`); each imitation episode runs that policy, and at every control step the
GNN policy's inputs and masks are recorded with the teacher's decision as the step's action
(`germinate` with the teacher's slot and blueprint, else `wait`). Then `epochs` passes of
minibatch Adam minimise the negative log-likelihood of those actions, and fit the value head to
the episodes' rewards (the same reward PPO uses). Only germination is imitated: under
`lifecycle: schedule` (required) the rest of a seed's lifecycle is the same for both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from esper.config import ConfigError
from esper.contracts import Decision, Observation
from esper.policy.base import Policy
from esper.policy.gnn import GnnPolicy, Inputs, Step
from esper.policy.gnn_net import PolicyNet
from esper.policy.masks import OPERATIONS
from esper.simic.ppo import evaluate
from esper.simic.settings import SimicConfig

log = logging.getLogger(__name__)
WAIT, GERMINATE = OPERATIONS.index("wait"), OPERATIONS.index("germinate")


class TeacherError(RuntimeError):
    """The teacher decided something the student's masks call illegal (a bug, not bad input:
    `check_teacher` refuses a teacher whose caps differ from the student's)."""


# what the heuristic teacher and the student's schedule must share: the caps that shape the
# student's masks, and how a germinated seed advances and is judged
SHARED = ("max_in_flight", "max_seeds", "training_epochs", "threshold")


def check_teacher(settings: SimicConfig) -> None:
    """Compose and build the teacher as its episodes will, in this process, before any
    episode runs: a teacher that cannot run, or whose seeds would live by other rules than the
    student's, is refused in one line naming `simic.imitate.teacher` (not after minutes of
    baselines, in a worker's traceback). Run after `check_suite`: what is left is the
    teacher's."""
    from hydra.utils import instantiate

    from esper.simic.episode import (
        EpisodeSpec,
        compose_run,
        episode_overrides,
        first_blended_epoch,
        one_line,
    )

    imitate = settings.imitate
    key = f"simic.imitate.teacher={imitate.teacher}"
    task = settings.tasks[0]
    spec = EpisodeSpec(
        task.name,
        (*task.overrides, *task.variants[0], *settings.overrides),
        settings.train_seeds[0],
        settings.episode_epochs,
    )
    try:
        teacher_run = compose_run(episode_overrides(spec, imitate.teacher, "."))
        teacher_cfg = teacher_run.policy
        student_cfg = compose_run(episode_overrides(spec, ("policy=gnn",), ".")).policy
        teacher = instantiate(teacher_cfg)
    except Exception as exc:  # noqa: BLE001 - Hydra's and the policy's errors, as one line
        raise ConfigError(f"{key}: {one_line(exc)}") from None
    for name in SHARED:  # conf/policy/heuristic.yaml and gnn.yaml must agree on these
        if teacher_cfg.get(name) != student_cfg.get(name):
            raise ConfigError(
                f"{key}: the teacher's policy.{name}={teacher_cfg.get(name)} differs from the "
                f"student's {student_cfg.get(name)} (conf/policy/heuristic.yaml, gnn.yaml)"
            )
    if teacher_cfg.get("metric") != "val_accuracy":
        raise ConfigError(
            f"{key}: the teacher keeps a seed by {teacher_cfg.get('metric')}, the student's "
            "schedule by val_accuracy (conf/policy/heuristic.yaml)"
        )
    first = teacher.first_germination_epoch
    if first >= settings.episode_epochs:
        raise ConfigError(
            f"{key}: the teacher cannot germinate before epoch {first} (policy.warmup_epochs="
            f"{teacher.warmup_epochs}, policy.patience={teacher.patience}), and an episode has "
            f"simic.episode_epochs={settings.episode_epochs}: nothing to imitate but waiting"
        )
    wait = teacher_run.kernels.wait_epochs
    # `first` counts epochs done: the teacher germinates at the control step ending epoch first-1
    if first_blended_epoch(first - 1, wait, teacher.training_epochs) >= settings.episode_epochs:
        log.warning(
            "%s: a seed germinated at epoch %d or later cannot wait for its kernel "
            "(kernels.wait_epochs=%s) and finish its %d incubation epochs within "
            "simic.episode_epochs=%d: the teacher's late seeds only cost",
            key,
            first,
            wait,
            teacher.training_epochs,
            settings.episode_epochs,
        )


def teacher_action(
    inputs: Inputs, obs: Observation, decisions: Sequence[Decision]
) -> tuple[int, int, int]:
    """The teacher's decisions as the student's (operation, slot, blueprint) indices."""
    germinations = [d for d in decisions if d.action == "germinate"]
    if not germinations:
        return WAIT, -1, -1
    if len(germinations) > 1:
        raise TeacherError(f"the teacher germinated {len(germinations)} seeds in one step")
    chosen = germinations[0]
    names = [s.name for s in obs.slots]
    masks = inputs.masks
    if chosen.slot not in names or chosen.blueprint not in masks.blueprints:
        raise TeacherError(f"the teacher's germinate {chosen.slot}/{chosen.blueprint} is unknown")
    slot = names.index(chosen.slot)
    blueprint = masks.blueprints.index(chosen.blueprint)
    if not (
        masks.operation[GERMINATE]
        and masks.slot[GERMINATE, slot]
        and masks.blueprint[slot, blueprint]
    ):
        raise TeacherError(
            f"the teacher's germinate {chosen.slot}/{chosen.blueprint} is masked for the student"
        )
    return GERMINATE, slot, blueprint


class Imitation:
    """Runs `teacher`; records each step as `student` would see it, with the teacher's action
    (`student.trace`). The run's record and events are the teacher's."""

    may_germinate = True

    def __init__(self, teacher: Policy, student: GnnPolicy) -> None:
        if student.lifecycle != "schedule":
            raise TeacherError("imitation needs a student under lifecycle: schedule")
        self.teacher = teacher
        self.student = student
        self.name = teacher.name

    def decide(self, obs: Observation) -> list[Decision]:
        inputs = self.student.inputs(obs)
        decisions = self.teacher.decide(obs)
        op, slot, blueprint = teacher_action(inputs, obs, decisions)
        if self.student.trace is not None:
            step = Step(
                obs.epoch,
                inputs.x.clone(),
                inputs.edge_index,
                inputs.u.clone(),
                inputs.slot_index,
                inputs.library,
                inputs.masks,
                op,
                slot,
                blueprint,
                0.0,
                0.0,
            )
            with torch.no_grad():
                log_prob, _, value = evaluate(self.student.net, step)
            step.log_prob, step.value = float(log_prob), float(value)
            self.student.trace.append(step)
        if op == GERMINATE:
            self.student.germinated += 1
        return decisions

    def state_dict(self) -> dict[str, Any]:
        return self.teacher.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state)

    def describe(self) -> dict[str, Any]:
        return {**self.teacher.describe(), "imitated_by": "gnn"}


@dataclass(frozen=True)
class ImitationStats:
    """One pass over the teacher's steps (means over minibatches)."""

    loss: float
    """Negative log-likelihood of the teacher's decisions."""
    value_loss: float
    teacher_probability: float
    """The student's mean probability of the teacher's decision (1: it decides as the teacher)."""


def imitation_epoch(
    net: PolicyNet,
    optimizer: torch.optim.Optimizer,
    steps: Sequence[Step],
    returns: Sequence[float],
    minibatch: int,
    value_coef: float,
    max_grad_norm: float,
    generator: torch.Generator,
) -> ImitationStats:
    """One pass of minibatch Adam on the NLL of the teacher's actions plus the value loss, in
    a seeded order."""
    target = torch.tensor(returns)
    sums = {"loss": 0.0, "value": 0.0, "prob": 0.0}
    batches = 0
    net.train()
    order = torch.randperm(len(steps), generator=generator)
    for start in range(0, len(steps), minibatch):
        index = order[start : start + minibatch]
        evaluated = [evaluate(net, steps[i]) for i in index.tolist()]
        log_prob = torch.stack([e[0] for e in evaluated])
        value = torch.stack([e[2] for e in evaluated])
        nll = -log_prob.mean()
        value_loss = (value - target[index]).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        (nll + value_coef * value_loss).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
        optimizer.step()
        sums["loss"] += nll.item()
        sums["value"] += value_loss.item()
        sums["prob"] += log_prob.detach().exp().mean().item()
        batches += 1
    net.eval()
    n = max(1, batches)
    return ImitationStats(sums["loss"] / n, sums["value"] / n, sums["prob"] / n)
