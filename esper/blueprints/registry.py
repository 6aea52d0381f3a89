"""The registry maps a blueprint name to its builder and the activation kinds it accepts.

A seed module computes a delta s(x) with the input's shape; the slot adds it to x. Builders zero
the last layer so that s(x) == 0 at birth, which makes every germination identity-preserving.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from esper.blueprints.code_digest import code_digest
from esper.contracts import ActivationKind, KernelSpec, activation_kind

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
    linear: bool = False  # s(x) = x @ M: a fossilized seed can be folded into a preceding Linear

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
    name: str,
    kinds: tuple[ActivationKind, ...],
    description: str = "",
    linear: bool = False,
    **defaults: Any,
) -> Callable[[Builder], Builder]:
    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"blueprint {name!r} is already registered")
        _REGISTRY[name] = Blueprint(name, tuple(kinds), builder, defaults, description, linear)
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


def kernel_spec(
    name: str,
    shape: tuple[int, ...],
    hparams: dict[str, Any] | None = None,
    init_seed: int = 0,
    device: str = "cpu",
) -> KernelSpec:
    """The spec of blueprint `name` built for one slot shape: what the library compiles and
    stores it under. One function, so that the check before training and the trainer's own
    requests name the same kernel (and the check's compile is the one the run later finds)."""
    return KernelSpec(
        blueprint=name,
        hparams=get(name).hparams(hparams),
        input_shape=tuple(shape),
        device=device,
        init_seed=init_seed,
        torch_version=torch.__version__,
        code=code_digest(get(name).builder),
    )


class BlueprintContractError(ValueError):
    pass


def check_contract(
    name: str, shape: tuple[int, ...], seed: int = 0, hparams: dict[str, Any] | None = None
) -> None:
    """What every blueprint promises: shape kept, exactly zero delta at birth (so the slot is the
    identity), gradients reaching its parameters, and the same module from the same seed.
    `hparams` overrides the blueprint's defaults, as `blueprints.hparams.<name>` does."""
    module = build(name, shape, hparams, seed=seed)
    where = f"blueprint {name!r} at shape {list(shape)}"
    if not isinstance(module, nn.Module):  # helper-found: `'NoneType' object is not callable`
        raise BlueprintContractError(
            f"{where}: its builder returned {type(module).__name__}, not an nn.Module"
        )
    built = {k: v.clone() for k, v in module.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((3, *shape), generator=generator, requires_grad=True)
    delta = module(x)
    if not isinstance(delta, torch.Tensor) or delta.shape != x.shape:
        got = list(delta.shape) if isinstance(delta, torch.Tensor) else type(delta).__name__
        raise BlueprintContractError(f"{where}: output {got} does not keep the input shape")
    if delta.dtype != x.dtype:  # helper-found: a float64 seed output passed the contract
        raise BlueprintContractError(
            f"{where}: output is {str(delta.dtype).removeprefix('torch.')}; it must keep the "
            f"input's {str(x.dtype).removeprefix('torch.')}"
        )
    if torch.count_nonzero(delta.detach()) != 0:
        raise BlueprintContractError(
            f"{where}: output is not zero at birth (max |delta| "
            f"{delta.detach().abs().max().item():.3g}); zero-initialise its last layer"
        )
    params = [p for p in module.parameters() if p.numel()]
    if not params:
        raise BlueprintContractError(f"{where}: has no parameters to learn (or only empty ones)")
    if not delta.requires_grad:  # helper-found: torch's `element 0 of tensors does not ...`
        raise BlueprintContractError(
            f"{where}: its output carries no gradient (detached, or computed without its "
            "parameters)"
        )
    (delta * torch.randn(delta.shape, generator=generator)).sum().backward()
    if not any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in params):
        raise BlueprintContractError(f"{where}: no parameter receives a gradient at birth")
    again = build(name, shape, hparams, seed=seed).state_dict()
    if any(not torch.equal(v, again[k]) for k, v in built.items()):
        raise BlueprintContractError(f"{where}: the same seed built a different module")
    changed = [
        k for k, v in module.state_dict().items() if k not in built or not torch.equal(v, built[k])
    ]
    if changed:  # helper-found: this was said as `the same seed built a different module`
        raise BlueprintContractError(
            f"{where}: its forward changed its own state ({', '.join(changed)}); a seed must "
            "give the same output for the same input"
        )


@dataclass(frozen=True)
class BlueprintSource:
    """Enough to register a blueprint in another process (a compile worker)."""

    name: str
    path: str
    kinds: tuple[ActivationKind, ...]
    defaults: dict[str, Any]
    linear: bool


def source(name: str) -> BlueprintSource:
    bp = get(name)
    path = f"{bp.builder.__module__}:{bp.builder.__qualname__}"
    return BlueprintSource(name, path, bp.kinds, dict(bp.defaults), bp.linear)


def ensure(src: BlueprintSource) -> None:
    """Register `src` here unless importing its module already did (decorated built-ins)."""
    if src.name in _REGISTRY:
        return
    module_name, _, qualname = src.path.partition(":")
    target: Any = importlib.import_module(module_name)
    if src.name in _REGISTRY:
        return
    for part in qualname.split("."):
        target = getattr(target, part)
    register(src.name, src.kinds, linear=src.linear, **src.defaults)(target)


def register_from_config(custom: dict[str, dict[str, Any]] | None) -> list[str]:
    """Blueprints a user declares in conf: `name: {_target_: pkg.builder, kinds: [...], k: v}`;
    the other keys are its default hyper-parameters. Returns the names registered."""
    names = []
    for name, node in (custom or {}).items():
        key = f"blueprints.custom.{name}"
        node = dict(node)
        target = node.pop("_target_", None)
        given = node.pop("kinds", ())
        kinds = (given,) if isinstance(given, str) else tuple(given)  # `kinds: vector`: one
        linear = bool(node.pop("linear", False))
        description = str(node.pop("description", ""))
        if not target:
            raise ValueError(f"{key}._target_ is missing: the import path of a builder function")
        allowed_kinds = ("vector", "sequence", "image")
        if not kinds or any(k not in allowed_kinds for k in kinds):
            raise ValueError(f"{key}.kinds={list(kinds)}; allowed: {', '.join(allowed_kinds)}")
        module_name, _, attribute = str(target).rpartition(".")
        try:
            builder = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"{key}._target_={target!r} cannot be imported: {exc}") from None
        if name in _REGISTRY:
            if _REGISTRY[name].builder is not builder:
                raise ValueError(f"{key}: a different blueprint named {name!r} is registered")
        else:
            register(name, kinds, description, linear, **node)(builder)
        names.append(name)
    return names
