"""The vocabulary every contract shares: activation kinds, seed states, frozen models."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict

ActivationKind = Literal["vector", "image", "sequence"]


def activation_kind(shape: tuple[int, ...]) -> ActivationKind:
    """Classify a per-sample activation shape (batch dimension excluded)."""
    kinds: dict[int, ActivationKind] = {1: "vector", 2: "sequence", 3: "image"}
    if len(shape) not in kinds:
        raise ValueError(f"activation shape {list(shape)} is not [F], [T, D] or [C, H, W]")
    return kinds[len(shape)]


class SeedState(str, Enum):
    DORMANT = "DORMANT"
    GERMINATED = "GERMINATED"
    TRAINING = "TRAINING"
    BLENDING = "BLENDING"
    FOSSILIZED = "FOSSILIZED"
    CULLED = "CULLED"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
