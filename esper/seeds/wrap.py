"""wrap(host, sites): find the sites, probe their activation shapes, and give each a SeedSlot."""

from __future__ import annotations

import fnmatch
import gc
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from esper.config import first_line
from esper.seeds.graph import Granularity, build_graph, probing
from esper.seeds.graph_features import ModelGraph
from esper.seeds.slot import SeedSlot


class SiteError(ValueError):
    """A host or a `sites` entry that cannot hold seeds, named with what is allowed."""


class ProbeFailed(ValueError):
    """The host refused `example_input` in wrap()'s probe forward; the host's own error is the
    cause (run.py says it with the dataset's input: esper.preflight.host_cannot_take)."""


_SLOT_AT: weakref.WeakKeyDictionary[nn.Module, weakref.ref[SeedSlot]] = weakref.WeakKeyDictionary()
"""The live slot each wrapped site carries: a site wrapped twice (`esper.wrap(model.host)`)
would run two models' seeds in one forward, each blending into the other's output."""


def _refuse_wrapped_host(host: nn.Module) -> None:
    """Refuse a host any module of which (the host included) carries a live slot of another
    wrapped model: that slot's seed joins the module's forward whichever model calls it. A
    model deleted but not yet collected counts as gone (collected first); a seed still attached
    keeps its slot alive, and runs in this host's forward (helper-found: a wrapped site's
    parent was accepted as a site, and the first model's seed changed the second's outputs)."""
    held = [name or "the host" for name, m in host.named_modules() if _live_slot(m) is not None]
    if held:
        gc.collect()
        held = [name or "the host" for name, m in host.named_modules() if _live_slot(m) is not None]
    if held:
        raise SiteError(
            f"esper.wrap: {', '.join(held)} of this host carr{'ies' if len(held) == 1 else 'y'} "
            "a seed slot of another wrapped model (this host, or part of it, is a wrapped "
            "model's `.host`), whose seed would run in its forward too: wrap a fresh host (a "
            "model deleted with a seed attached here leaves that seed in this host's forward)"
        )


def _live_slot(module: nn.Module) -> SeedSlot | None:
    ref = _SLOT_AT.get(module)
    return ref() if ref is not None else None


def slot_key(site: str) -> str:
    return site.replace(".", "__")


class MorphogeneticModel(nn.Module):
    """The host plus its slots. Forward is the host's; slots join it through forward hooks."""

    def __init__(
        self, host: nn.Module, slots: dict[str, SeedSlot], graph: ModelGraph | None = None
    ) -> None:
        super().__init__()
        self.host = host
        self.slots = nn.ModuleDict({slot_key(name): slot for name, slot in slots.items()})
        self.graph = graph
        """The model as a graph (leaf modules and slots), built once at wrap time."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.host(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Straight to the host: the wrapper adds no module-call machinery of its own to each
        # step (hooks belong on the host or its modules, where they still run).
        return self.host(*args, **kwargs)

    def slot(self, name: str) -> SeedSlot:
        return self.slots[slot_key(name)]  # type: ignore[return-value]

    def iter_slots(self) -> Iterator[SeedSlot]:
        yield from self.slots.values()  # type: ignore[misc]

    def host_parameters(self) -> list[nn.Parameter]:
        return list(self.host.parameters())

    def seed_parameter_count(self) -> int:
        return sum(p.numel() for s in self.iter_slots() for p in s.seed_parameters())

    def restore_slots(
        self,
        snapshots: dict[str, dict[str, Any]],
        kernel_for: Callable[[SeedSlot, str, str], nn.Module],
    ) -> None:
        """Put every slot back as a checkpoint's `snapshots` (`SeedSlot.snapshot`, by slot
        name) hold it, each seed module from `kernel_for(slot, blueprint, kernel_id)`; the
        seeds' weights then load with the model's state dict. A merged seed's function lives
        in the host's weights: it gets no module (its kernel attached again made the state
        dict's seed keys missing, and a resume after a merge a traceback)."""
        for slot in self.iter_slots():
            snapshot = snapshots[slot.name]
            module = None
            if snapshot["kernel_id"] is not None and not snapshot["merged"]:
                module = kernel_for(slot, snapshot["blueprint"], snapshot["kernel_id"])
            slot.restore(snapshot, module)

    def param_counts(self) -> dict[str, int]:
        """Parameters of the host, of the seeds in the slots, and in all."""
        host = sum(p.numel() for p in self.host.parameters())
        seeds = self.seed_parameter_count()
        return {"host": host, "seeds": seeds, "total": host + seeds}


def _probe_shapes(
    host: nn.Module, modules: dict[str, nn.Module], example_input: torch.Tensor
) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    problems: dict[str, str] = {}
    calls: dict[str, int] = dict.fromkeys(modules, 0)

    def recorder(name: str):  # noqa: ANN202 - a forward hook factory
        def hook(module: nn.Module, args: object, output: object) -> None:
            calls[name] += 1
            if not isinstance(output, torch.Tensor):
                problems[name] = f"its output is a {type(output).__name__}, not a single tensor"
            elif not output.is_floating_point():  # helper-found: a traceback after epoch 1
                problems[name] = (
                    f"its output is {str(output.dtype).removeprefix('torch.')}, not floating "
                    "point: a seed adds to a float activation"
                )
            else:
                shapes[name] = tuple(output.shape[1:])

        return hook

    with probing(host, {m: recorder(n) for n, m in modules.items()}):
        try:
            host(example_input)
        except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
            shown = _described(example_input)
            raise ProbeFailed(
                f"the host cannot take example_input ({shown}): {first_line(exc)}"
            ) from exc
    for name, count in calls.items():  # helper-found: a seed ran, and its ramp moved, per call
        if count > 1:
            problems[name] = (
                f"it is called {count} times in one forward (a module used twice); a seed "
                "needs a site called once"
            )
    for name in modules:
        if name not in shapes and name not in problems:
            problems[name] = "it was not called in the forward pass"
    if problems:
        detail = "; ".join(f"{n}: {why}" for n, why in problems.items())
        raise SiteError(f"model.sites cannot hold seeds: {detail}")
    return shapes


def _described(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    return type(value).__name__


def check_host(host: nn.Module, sites: object) -> None:
    """What wrap() cannot work with, said before the probe (each was a traceback from deep
    inside torch or Python, or a seed silently never run; helper-found)."""
    if isinstance(host, MorphogeneticModel):
        raise SiteError("esper.wrap: the model is wrapped already; wrap its host once")
    if type(host).__name__ == "OptimizedModule" and hasattr(host, "_orig_mod"):
        raise SiteError(
            "esper.wrap: the host is a torch.compile'd module, whose compiled graph skips the "
            "forward hooks seeds join through; wrap the module itself (`model._orig_mod`)"
        )
    if isinstance(host, torch.jit.ScriptModule):
        raise SiteError(
            "esper.wrap: a TorchScript module takes no forward hooks; wrap the nn.Module"
        )
    dtypes = {p.dtype for p in host.parameters() if p.is_floating_point()}
    if dtypes - {torch.float32}:
        found = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        raise SiteError(
            f"esper.wrap: the host's parameters are {found}; seeds are float32: wrap a float32 "
            "model (mixed precision: autocast at training time)"
        )
    if isinstance(sites, str) or not isinstance(sites, Sequence):
        raise SiteError(f"sites={sites!r}: a list of module names, globs or types, e.g. ['fc']")
    for entry in sites:
        if not (
            isinstance(entry, str) or (isinstance(entry, type) and issubclass(entry, nn.Module))
        ):
            raise SiteError(
                f"sites: {entry!r} is not a module name, glob or nn.Module type (e.g. 'layer1.0', "
                "'layer*.conv2', nn.Linear, 'type:Linear')"
            )


def glob_match(name: str, pattern: str) -> bool:
    """Glob over dotted module names where `*` stays within one name segment."""
    parts, pattern_parts = name.split("."), pattern.split(".")
    return len(parts) == len(pattern_parts) and all(
        fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern_parts)
    )


def resolve_sites(host: nn.Module, sites: Sequence[str | type[nn.Module]]) -> list[str]:
    """Module names for each site entry: an exact name, a glob over names (`layer*.conv2`), or a
    module type (a class, or `type:Conv2d` naming one). Every entry must match something."""
    if not sites:
        raise SiteError("model.sites is empty; name at least one module of the host")
    named = {n: m for n, m in host.named_modules() if n}
    chosen: list[str] = []
    for entry in sites:
        if isinstance(entry, type):
            matches = [n for n, m in named.items() if isinstance(m, entry)]
            label = entry.__name__
        elif entry.startswith("type:"):
            type_name = entry.removeprefix("type:")
            matches = [n for n, m in named.items() if type(m).__name__ == type_name]
            label = entry
        elif any(c in entry for c in "*?["):
            matches = [n for n in named if glob_match(n, entry)]
            label = entry
        else:
            matches = [entry] if entry in named else []
            label = entry
        alias = _aliased(host, entry, named) if isinstance(entry, str) and not matches else None
        if alias is not None:  # helper-found: `self.b = self.a`, site 'b', said no more
            raise SiteError(
                f"model.sites: {entry!r} is the module {alias!r} under a second name (PyTorch "
                f"lists a shared module once); name it {alias!r}"
            )
        if not matches:
            types = sorted({type(m).__name__ for m in named.values()})
            raise SiteError(
                f"model.sites: {label!r} matches no module of {type(host).__name__}; "
                f"modules: {', '.join(named)}; types: {', '.join(types)}"
            )
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def _aliased(host: nn.Module, entry: str, named: dict[str, nn.Module]) -> str | None:
    """The listed name of the module `entry` reaches by attribute, where that is another name."""
    try:
        module = host.get_submodule(entry)
    except (AttributeError, ValueError):
        return None
    return next((name for name, m in named.items() if m is module and name != entry), None)


def wrap(
    host: nn.Module,
    sites: Sequence[str | type[nn.Module]],
    example_input: torch.Tensor,
    *,
    embargo_epochs: int = 2,
    latency_sample_every: int = 25,
    fossilized_trainable: bool = True,
    graph: Granularity | None = "modules",
) -> MorphogeneticModel:
    """Put a dormant SeedSlot after each site of `host`.

    A probe forward with `example_input` checks, now rather than mid-training, that every site
    yields one tensor of shape [B, F], [B, T, D] or [B, C, H, W].

    Args:
        host: the user's model; its forward, parameters and state_dict keys stay its own.
        sites: module names, dotted-segment globs (`layer*.conv2`) or module types (a class, or
            `type:Name`); every entry must match at least one module.
        example_input: one small batch the host accepts (two rows are enough).
        embargo_epochs: control steps a culled slot waits before it may germinate again.
        latency_sample_every: time one seed forward in this many (training-pass latency).
        fossilized_trainable: whether a fossilized seed keeps training (`seeds.fossilized`).
        graph: the model graph's granularity (`modules`: leaf modules and slots; `sites`: the
            slots alone), or None for no graph. Built from torch.fx where the host traces,
            else from forward-hook order; `model.graph.source` says which.
    """
    check_host(host, sites)
    names = resolve_sites(host, sites)
    named = dict(host.named_modules())
    modules = {s: named[s] for s in names}
    _refuse_wrapped_host(host)
    shapes = _probe_shapes(host, modules, example_input)
    slots = {}
    for name in names:
        try:
            slots[name] = SeedSlot(
                name,
                modules[name],
                shapes[name],
                embargo_epochs=embargo_epochs,
                latency_sample_every=latency_sample_every,
                fossilized_trainable=fossilized_trainable,
            )
        except ValueError as exc:
            raise SiteError(f"model.sites: {name}: {exc}") from None
    for name, slot in slots.items():
        _SLOT_AT[modules[name]] = weakref.ref(slot)
    model_graph = None
    if graph is not None:
        model_graph = ModelGraph(build_graph(host, names, example_input, graph), names)
    return MorphogeneticModel(host, slots, model_graph)
