"""The registry maps a blueprint name to its builder and the activation kinds it accepts.

A seed module computes a delta s(x) with the input's shape; the slot adds it to x. Builders zero
the last layer so that s(x) == 0 at birth, which makes every germination identity-preserving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from esper.contracts import ActivationKind, activation_kind

Builder = Callable[..., nn.Module]


class UnknownBlueprintError(KeyError, ValueError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Blueprint:
    name: str
    kinds: tuple[ActivationKind, ...]
    builder: Builder
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def hparams(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        merged = dict(self.defaults)
        for key, value in (overrides or {}).items():
            if key not in self.defaults:
                allowed = ", ".join(sorted(self.defaults)) or "none"
                raise ValueError(
                    f"blueprints.hparams.{self.name}.{key} is not a hyper-parameter of "
                    f"{self.name}; allowed: {allowed}"
                )
            merged[key] = value
        return merged


_REGISTRY: dict[str, Blueprint] = {}


def register(
    name: str, kinds: tuple[ActivationKind, ...], description: str = "", **defaults: Any
) -> Callable[[Builder], Builder]:
    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"blueprint {name!r} is already registered")
        _REGISTRY[name] = Blueprint(name, tuple(kinds), builder, defaults, description)
        return builder

    return decorate


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str, key: str = "blueprint") -> Blueprint:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBlueprintError(
            f"{key}: unknown blueprint {name!r}; allowed: {', '.join(_REGISTRY)}"
        ) from None


def compatible(shape: tuple[int, ...], allowed: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    kind = activation_kind(shape)
    return tuple(n for n in allowed if kind in get(n).kinds)


def build(
    name: str, shape: tuple[int, ...], hparams: dict[str, Any] | None = None, seed: int = 0
) -> nn.Module:
    """Pure: the same name, shape, hyper-parameters and seed give bitwise the same module."""
    blueprint = get(name)
    kind = activation_kind(shape)
    if kind not in blueprint.kinds:
        raise ValueError(
            f"blueprint {name!r} accepts {', '.join(blueprint.kinds)} activations, "
            f"not {kind} {list(shape)}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = blueprint.builder(tuple(shape), **blueprint.hparams(hparams))
    return module
