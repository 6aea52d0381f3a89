"""The model as a graph: the host's leaf modules and the seed slots, with edges along the data.

Built once, at wrap time, from `torch.fx` when the host traces (edges then follow the data
through functional ops, residual adds included), else from the order in which forward hooks
fire during the probe (edges then chain the calls; `source` says which). A slot node sits
after its site: edges run from the modules that produce the site's output to the slot, and
from the slot to the modules that consume it (the direct edges stay: a seed adds to the path).

`granularity="sites"` keeps only the slots, chained in forward order: a small graph for a huge
host whose modules say little to the policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

Granularity = Literal["modules", "sites"]
GraphSource = Literal["fx", "hooks", "sites"]

MODULE_KINDS: tuple[tuple[str, tuple[type[nn.Module], ...]], ...] = (
    ("linear", (nn.Linear, nn.Bilinear)),
    ("conv", (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)),
    ("norm", (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)),
    ("pool", (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout)),
    ("embedding", (nn.Embedding, nn.MultiheadAttention)),
)
"""Coarse module kinds a node is tagged with; anything else (activations too) is `other`."""
KIND_NAMES = (*(name for name, _ in MODULE_KINDS), "merge", "other")
"""`merge`: a function joining computed tensors (residual add, concat, matmul)."""


def module_kind(module: nn.Module) -> str:
    for name, types in MODULE_KINDS:
        if isinstance(module, types):
            return name
    return "other"


@dataclass
class GraphSpec:
    """The graph's structure: node names in forward order, which are slots, and the edges."""

    nodes: list[str]
    slot_nodes: dict[str, int]
    """Slot name -> node index."""
    edges: list[tuple[int, int]]
    source: GraphSource
    kinds: list[str] = field(default_factory=list)
    params: list[int] = field(default_factory=list)


@contextmanager
def probing(
    host: nn.Module, hooks: dict[nn.Module, Callable[..., Any]] | None = None
) -> Iterator[None]:
    """For a probe forward: eval mode, no gradients, `hooks` (module -> forward hook) attached;
    all undone after, each module's own training mode included (helper-found: restoring the
    host's alone, recursively, put a BatchNorm the user had frozen in eval back in training)."""
    handles = [module.register_forward_hook(hook) for module, hook in (hooks or {}).items()]
    modes = [(module, module.training) for module in host.modules()]
    host.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training
        for handle in handles:
            handle.remove()


def _leaf(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


def _is_merge(node: fx.Node) -> bool:
    """A function or method joining two or more computed tensors (a residual add, a concat,
    attention's matmul): a graph node of its own, so that a residual stream stays a chain
    instead of linking every block to every later one."""
    if node.op not in ("call_function", "call_method"):
        return False
    computed = [n for n in node.all_input_nodes if n.op != "get_attr" and "tensor_meta" in n.meta]
    return len(computed) >= 2


def _graph_name(node: fx.Node) -> str | None:
    if node.op == "call_module":
        return str(node.target)
    return f"op:{node.name}" if _is_merge(node) else None


def _nearest(start: Iterable[fx.Node], step: str) -> set[str]:
    """The nearest graph nodes (modules or merges) from `start`, walking `step`
    (`all_input_nodes` upstream, `users` downstream) through everything else."""
    found: set[str] = set()
    stack, seen = list(start), set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        name = _graph_name(current)
        if name is not None:
            found.add(name)
        else:
            stack.extend(getattr(current, step))
    return found


def _site_outputs(graph: fx.Graph, sites: Sequence[str]) -> dict[str, fx.Node]:
    """The last fx node computed inside each site's module: the site's output. One pass."""
    wanted = set(sites)
    last: dict[str, fx.Node] = {}
    for node in graph.nodes:
        paths = set((node.meta.get("nn_module_stack") or {}).keys())
        if node.op == "call_module":
            parts = str(node.target).split(".")
            paths.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        for path in paths & wanted:
            last[path] = node
    return last


def _from_fx(host: nn.Module, sites: Sequence[str], example_input: torch.Tensor) -> GraphSpec:
    traced = fx.symbolic_trace(host)
    with probing(host):  # which nodes hold tensors (not sizes): merges join tensors only
        ShapeProp(traced).propagate(example_input)
    nodes: list[str] = []
    for n in traced.graph.nodes:
        name = _graph_name(n)
        if name is not None and name not in nodes:
            nodes.append(name)
    index = {name: i for i, name in enumerate(nodes)}
    edges: set[tuple[int, int]] = set()
    for n in traced.graph.nodes:
        name = _graph_name(n)
        if name is not None:
            for upstream in _nearest(n.all_input_nodes, "all_input_nodes"):
                edges.add((index[upstream], index[name]))
    outputs = _site_outputs(traced.graph, sites)
    slot_nodes: dict[str, int] = {}
    for site in sites:
        out = outputs.get(site)
        if out is None:
            raise ValueError(f"site {site} has no node in the traced graph")
        slot = len(nodes)
        nodes.append(f"slot:{site}")
        slot_nodes[site] = slot
        for upstream in _nearest([out], "all_input_nodes"):
            edges.add((index[upstream], slot))
        for downstream in _nearest(out.users, "users"):
            edges.add((slot, index[downstream]))
    return GraphSpec(nodes, slot_nodes, sorted(edges), "fx")


def _from_hooks(host: nn.Module, sites: Sequence[str], example_input: torch.Tensor) -> GraphSpec:
    """Forward-hook order: leaf modules chained as called; a slot after its site's last call."""
    named = dict(host.named_modules())
    calls: list[str] = []
    watched = {n for n, m in named.items() if n and _leaf(m)} | set(sites)
    hooks = {named[n]: (lambda m, a, o, name=n: calls.append(name)) for n in watched}
    with probing(host, hooks):
        host(example_input)
    nodes: list[str] = []
    slot_nodes: dict[str, int] = {}
    edges: set[tuple[int, int]] = set()
    previous: int | None = None
    for name in calls:
        if name in sites and name not in slot_nodes:
            node = len(nodes)
            nodes.append(f"slot:{name}")
            slot_nodes[name] = node
            if previous is not None:
                edges.add((previous, node))
            continue  # the chain goes on from the site's last module; the slot branches off
        if name in sites or name in nodes:
            continue
        node = len(nodes)
        nodes.append(name)
        if previous is not None:
            edges.add((previous, node))
        for slot in slot_nodes.values():
            if not any(a == slot for a, _ in edges):
                edges.add((slot, node))
        previous = node
    return GraphSpec(nodes, slot_nodes, sorted(edges), "hooks")


def _sites_only(sites: Sequence[str]) -> GraphSpec:
    nodes = [f"slot:{s}" for s in sites]
    edges = [(i, i + 1) for i in range(len(sites) - 1)]
    return GraphSpec(nodes, {s: i for i, s in enumerate(sites)}, edges, "sites")


def build_graph(
    host: nn.Module,
    sites: Sequence[str],
    example_input: torch.Tensor,
    granularity: Granularity = "modules",
) -> GraphSpec:
    """The host's dataflow graph with one node per slot (see the module docstring)."""
    if granularity == "sites":
        spec = _sites_only(sites)
    else:
        try:
            spec = _from_fx(host, sites, example_input)
        except Exception:  # noqa: BLE001 - any untraceable host falls back, and says so
            spec = _from_hooks(host, sites, example_input)
    named = dict(host.named_modules())
    for name in spec.nodes:
        module = named.get(name)
        if module is None:  # a slot or a merge
            spec.kinds.append("slot" if name.startswith("slot:") else "merge")
            spec.params.append(0)
        else:
            spec.kinds.append(module_kind(module))
            spec.params.append(sum(p.numel() for p in module.parameters()))
    return spec


def undirected(edges: Iterable[tuple[int, int]]) -> torch.Tensor:
    """[2, 2E] edge_index with both directions: information flows up and down the model."""
    pairs = list(edges)
    if not pairs:
        return torch.zeros((2, 0), dtype=torch.long)
    forward = torch.tensor(pairs, dtype=torch.long).t()
    return torch.cat([forward, forward.flip(0)], dim=1)
