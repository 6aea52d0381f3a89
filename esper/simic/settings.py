"""The training command's configuration (conf/train_policy.yaml), checked before anything runs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_variant() -> list[list[str]]:
    return [[]]


class TaskConfig(Section):
    """One task of the suite: overrides of the run config, and host variants (one drawn per
    episode, e.g. widths), each a list of overrides."""

    name: str
    overrides: list[str]
    variants: list[list[str]] = Field(default_factory=_no_variant, min_length=1)


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


class RewardConfig(Section):
    param_cost: float = Field(default=0.01, ge=0)
    flop_cost: float = Field(default=0.0, ge=0)


class SimicConfig(Section):
    tasks: list[TaskConfig] = Field(min_length=1)
    train_seeds: list[int] = Field(min_length=1)
    """Seeds episodes draw from; evaluation uses others (0..4), never these."""
    episode_epochs: int = Field(ge=2)
    episodes_per_update: int = Field(ge=1)
    updates: int = Field(ge=1)
    workers: int = Field(default=2, ge=1)
    checkpoint_every: int = Field(default=5, ge=1)
    seed: int = Field(default=0, ge=0)
    resume: str | None = None
    """A training run directory (or its checkpoint file) to continue."""
    output: str | None = None
    """Where the final policy weights are also written (the shipped checkpoint's path)."""
    hidden: int = Field(default=32, ge=1)
    layers: int = Field(default=2, ge=1)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)

    @model_validator(mode="after")
    def disjoint_from_evaluation(self) -> SimicConfig:
        overlap = sorted(set(self.train_seeds) & set(range(5)))
        if overlap:
            raise ValueError(
                f"simic.train_seeds={self.train_seeds}: seeds 0..4 are kept for evaluation; "
                f"remove {overlap}"
            )
        return self
