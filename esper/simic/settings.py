"""The training command's configuration (conf/train_policy.yaml), checked before anything runs."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from esper.config import MAX_SEED, repeated
from esper.events.tables import flatten
from esper.policy.gnn import Lifecycle

RESERVED_SEEDS = set(range(45)) | set(range(50, 100))
"""Evaluation (0..4; 5..9, 10..14 and 15..19: further sets, each first read after the one
before; 20..24: kept unread for the next checkpoint; 25..44: twenty seeds, read once for the
paired comparison of experiments/gnn_policy.md; 80..99: twenty seeds for the imitation run's
comparison with its teacher) and checkpoint selection (50..59, and 60..79 for twenty-seed
selection: experiments/select_checkpoint.sh): training never draws these."""


class Section(BaseModel):
    """Strict: `true` is not a count and `"0.1"` is not a rate (Hydra gives typed values), and
    `inf` or `nan` is no setting (`simic.ppo.lr=inf` trained a policy of NaN weights)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _no_variant() -> list[list[str]]:
    return [[]]


class TaskConfig(Section):
    """One task of the suite: overrides of the run config, and host variants (one drawn per
    episode, e.g. widths), each a list of overrides."""

    name: str
    overrides: list[str]
    variants: list[list[str]] = Field(default_factory=_no_variant, min_length=1)
    weight: float = Field(default=1.0, gt=0)
    """How often a group draws this task, relative to the suite's other weights: more
    episodes go where the decisions matter most (where growth can pay, and fail to)."""


class PPOConfig(Section):
    lr: float = Field(default=3e-4, gt=0)
    clip: float = Field(default=0.2, gt=0)
    epochs: int = Field(default=4, ge=1)
    minibatch: int = Field(default=64, ge=1)
    gamma: float = Field(default=1.0, gt=0, le=1)
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    value_coef: float = Field(default=0.5, ge=0)
    entropy_coef: float = Field(default=0.01, ge=0)
    max_grad_norm: float = Field(default=0.5, gt=0)


MAX_PRICE = 1000.0
"""A price beyond which no growth can pay (a reward is a val-accuracy gain, at most 1): the
bound keeps rewards within float32, where PPO computes (helper-found: 1e200 overflowed there
and was said as weights gone NaN)."""


class RewardConfig(Section):
    """Costs in val accuracy (esper.simic.reward)."""

    per_1k_params: float = Field(default=0.05, ge=0, le=MAX_PRICE)
    """Accuracy 1,000 added parameters must buy to pay for themselves."""
    per_1k_flops: float = Field(default=0.0, ge=0, le=MAX_PRICE)
    """Likewise for 1,000 added forward FLOPs a sample."""


TEACHER_OVERRIDE = re.compile(r"policy=heuristic|policy\.(patience|min_delta|warmup_epochs)=.+")
TEACHER_ALLOWED = "policy=heuristic, policy.patience=, policy.min_delta=, policy.warmup_epochs="


class ImitateConfig(Section):
    """Imitation before PPO (esper.simic.imitation): off at `episodes: 0`."""

    teacher: list[str] = Field(default_factory=list)
    """The teacher as run overrides, e.g. `[policy=heuristic, policy.patience=1,
    policy.warmup_epochs=2, policy.min_delta=1.0]` (the hand-tuned early schedule). Only
    the heuristic and its germination keys (`TEACHER_ALLOWED`): the student learns when,
    where and what to germinate, so the task, host, seed and a seed's lifecycle after
    germination stay the suite's and the student's (a teacher that changed them would teach
    decisions about another run)."""
    episodes: int = Field(default=0, ge=0)
    """Teacher episodes to learn from, drawn as an update's groups are (one per task, host
    and seed drawn: the teacher decides the same way every time)."""
    epochs: int = Field(default=30, ge=1)
    """Passes over the teacher's steps."""
    lr: float = Field(default=1e-3, gt=0)
    minibatch: int = Field(default=64, ge=1)

    @model_validator(mode="after")
    def teacher_decides_germination_only(self) -> ImitateConfig:
        for item in self.teacher:
            if not TEACHER_OVERRIDE.fullmatch(item):
                raise ValueError(
                    f"simic.imitate.teacher: {item!r} is not a teacher setting; allowed: "
                    f"{TEACHER_ALLOWED} (the task, host, seed and a seed's lifecycle are the "
                    "suite's and the student's: simic.tasks, simic.overrides)"
                )
        if self.teacher and not self.episodes:
            raise ValueError(
                f"simic.imitate.teacher={self.teacher} is set but simic.imitate.episodes=0 "
                "runs no teacher episode; allowed: episodes >= 1 with a teacher, or teacher=[]"
            )
        return self


RESUME_MAY_CHANGE = ("updates", "resume", "output", "overwrite", "workers", "checkpoint_every")
"""The settings a resume may change (`SimicConfig.resumable`): how far, from where, to where,
and how the work is spread and saved."""


class SimicConfig(Section):
    tasks: list[TaskConfig] = Field(min_length=1)
    train_seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(min_length=1)
    """Seeds episodes draw from; never the evaluation seeds (0..44 and 80..99) or the
    checkpoint selection seeds (50..79): `RESERVED_SEEDS`."""
    episode_epochs: int = Field(ge=2)
    episodes_per_update: int = Field(ge=1)
    group_size: int = Field(default=1, ge=1)
    """Episodes an update runs on the same task, host and training seed, each sampling its
    decisions with its own seed. Above 1 an episode's advantage is its reward less the mean of
    its group's others (the luck of the seed cancels: only the decisions differ); at 1 it is
    GAE over the value head."""
    updates: int = Field(ge=1)
    workers: int = Field(default=2, ge=1)
    worker_threads: int = Field(default=1, ge=1)
    """torch threads in each episode worker; workers x threads should not exceed the cores."""
    checkpoint_every: int = Field(default=5, ge=1)
    seed: int = Field(default=0, ge=0)
    resume: str | None = None
    """A training run directory (or its checkpoint file) to continue."""
    output: str | None = None
    """Where the final policy weights are also written (the shipped checkpoint's path)."""
    overwrite: bool = False
    """Replace an earlier training in the run directory (its simic.pt, policies and W&B
    files); without it such a directory is refused, as a run's is (`trainer.overwrite`)."""
    hidden: int = Field(default=32, ge=1)
    layers: int = Field(default=2, ge=1)
    lifecycle: Lifecycle = "learned"
    """What the policy learns to decide (esper.policy.gnn): every operation, or germination
    alone with the rest on schedule. Saved with its weights: the policy runs as trained."""
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    overrides: list[str] = Field(default_factory=list)
    """Run overrides every episode takes after its task's, e.g. `seeds.contribution=shadow`
    (the protocol the policy is then evaluated under, experiments/select_checkpoint.sh EXTRA)."""
    imitate: ImitateConfig = Field(default_factory=ImitateConfig)

    def config_hash(self) -> str:
        """12 hex digits of sha256 over every setting that shapes training (all but where it
        resumes from and writes to): experiments/ name a trained policy by it. No `overrides`
        and no imitation hash as before those keys existed, so the hashes experiments/ cites
        still hold. A training keeps the hash of the settings it started with: a resume that
        changes `updates`, `workers` or `checkpoint_every` does not change it (esper.simic.train;
        leaving those keys out here would change every hash experiments/ cites)."""
        exclude = {"resume", "output", "overwrite"} | (set() if self.overrides else {"overrides"})
        exclude |= set() if self.imitate.episodes else {"imitate"}
        data = self.model_dump(mode="json", exclude=exclude)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def changed_since(self, trained: dict[str, object]) -> list[str]:
        """The settings that differ from `trained` (a `resumable()` of the run resumed), as
        `simic.key: then -> now`: a resume continues the same training, so only `updates` (how
        far it goes), `resume` and `output` may change."""
        now = flatten(self.resumable(), ".")
        before = {"overrides": [], "imitate": ImitateConfig().model_dump(mode="json")}
        kept = {k: v for k, v in trained.items() if k not in RESUME_MAY_CHANGE}
        then = flatten({**before, **kept}, ".")  # runs from before the keys existed
        return [
            f"simic.{key}: {then.get(key)!r} -> {now.get(key)!r}"
            for key in sorted(now.keys() | then.keys())
            if now.get(key) != then.get(key)
        ]

    def resumable(self) -> dict[str, object]:
        """Every setting a resume must keep: all but `updates`, `resume`, `output`, `overwrite`,
        and how the work is spread and saved (`workers`, `checkpoint_every`), which change no
        number of the training (each episode's result is received in the order it was drawn);
        `worker_threads` stays: torch's threads change the order of float sums."""
        return self.model_dump(mode="json", exclude=set(RESUME_MAY_CHANGE))

    @model_validator(mode="after")
    def distinct_task_names(self) -> SimicConfig:
        """A task's name is how every line names it (`simic.tasks[spirals] ...`): two of one
        name made those lines ambiguous (helper-found)."""
        twice = repeated([task.name for task in self.tasks])
        if twice:
            raise ValueError(
                f"simic.tasks: more than one task is named {' and '.join(map(repr, twice))}; "
                "allowed: a distinct name each"
            )
        return self

    @model_validator(mode="after")
    def whole_groups(self) -> SimicConfig:
        if self.episodes_per_update % self.group_size:
            raise ValueError(
                f"simic.episodes_per_update={self.episodes_per_update} must be a multiple of "
                f"simic.group_size={self.group_size}"
            )
        return self

    @model_validator(mode="after")
    def imitation_is_complete(self) -> SimicConfig:
        if self.imitate.episodes and not self.imitate.teacher:
            raise ValueError(
                f"simic.imitate.episodes={self.imitate.episodes} needs simic.imitate.teacher "
                "(run overrides naming the policy to imitate, e.g. [policy=heuristic])"
            )
        runs = sum(len(task.variants) for task in self.tasks) * len(self.train_seeds)
        if self.imitate.episodes > runs:
            raise ValueError(
                f"simic.imitate.episodes={self.imitate.episodes}: the suite has {runs} distinct "
                "(task, host, training seed) runs, and the teacher decides the same way on "
                f"each every time; allowed: 0..{runs}"
            )
        if self.imitate.episodes and self.lifecycle != "schedule":
            raise ValueError(
                f"simic.imitate needs simic.lifecycle=schedule (only germination is "
                f"imitated), not {self.lifecycle!r}"
            )
        return self

    @model_validator(mode="after")
    def disjoint_from_evaluation(self) -> SimicConfig:
        repeated = sorted({s for s in self.train_seeds if self.train_seeds.count(s) > 1})
        if repeated:  # helper-found: imitation's "distinct runs" were one run, three times
            raise ValueError(
                f"simic.train_seeds={self.train_seeds} repeats {repeated}; allowed: distinct seeds"
            )
        overlap = sorted(set(self.train_seeds) & RESERVED_SEEDS)
        if overlap:
            raise ValueError(
                f"simic.train_seeds={self.train_seeds}: seeds 0..44 and 80..99 are kept for "
                f"evaluation and 50..79 for choosing a checkpoint; remove {overlap}"
            )
        return self
