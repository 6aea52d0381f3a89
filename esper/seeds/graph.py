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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.fx as fx
from torch import nn

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
KIND_NAMES = (*(name for name, _ in MODULE_KINDS), "other")


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


def _leaf(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


def _module_ancestors(node: fx.Node) -> set[str]:
    """The nearest call_module nodes upstream of `node`, through functions and methods."""
    found: set[str] = set()
    stack, seen = list(node.all_input_nodes), set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op == "call_module":
            found.add(str(current.target))
        else:
            stack.extend(current.all_input_nodes)
    return found


def _module_descendants(node: fx.Node) -> set[str]:
    """The nearest call_module nodes downstream of `node`, through functions and methods."""
    found: set[str] = set()
    stack, seen = list(node.users), set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op == "call_module":
            found.add(str(current.target))
        else:
            stack.extend(current.users)
    return found


def _site_output(graph: fx.Graph, site: str) -> fx.Node | None:
    """The last fx node computed inside the site's module: the site's output."""
    last = None
    for node in graph.nodes:
        if node.op == "call_module" and str(node.target) == site:
            last = node
            continue
        paths = list((node.meta.get("nn_module_stack") or {}).keys())
        if any(path == site or path.startswith(site + ".") for path in paths) or (
            node.op == "call_module" and str(node.target).startswith(site + ".")
        ):
            last = node
    return last


def _from_fx(host: nn.Module, sites: Sequence[str]) -> GraphSpec:
    traced = fx.symbolic_trace(host)
    modules = [n for n in traced.graph.nodes if n.op == "call_module"]
    nodes: list[str] = []
    for n in modules:
        if str(n.target) not in nodes:
            nodes.append(str(n.target))
    index = {name: i for i, name in enumerate(nodes)}
    edges: set[tuple[int, int]] = set()
    for n in modules:
        for upstream in _module_ancestors(n):
            edges.add((index[upstream], index[str(n.target)]))
    slot_nodes: dict[str, int] = {}
    for site in sites:
        out = _site_output(traced.graph, site)
        if out is None:
            raise ValueError(f"site {site} has no node in the traced graph")
        slot = len(nodes)
        nodes.append(f"slot:{site}")
        slot_nodes[site] = slot
        producers = {str(out.target)} if out.op == "call_module" else _module_ancestors(out)
        for upstream in producers:
            edges.add((index[upstream], slot))
        for downstream in _module_descendants(out):
            edges.add((slot, index[downstream]))
    return GraphSpec(nodes, slot_nodes, sorted(edges), "fx")


def _from_hooks(host: nn.Module, sites: Sequence[str], example_input: torch.Tensor) -> GraphSpec:
    """Forward-hook order: leaf modules chained as called; a slot after its site's last call."""
    named = dict(host.named_modules())
    calls: list[str] = []
    handles = []
    watched = {n for n, m in named.items() if n and _leaf(m)} | set(sites)
    for name in watched:
        handles.append(
            named[name].register_forward_hook(lambda m, a, o, name=name: calls.append(name))
        )
    try:
        was_training = host.training
        host.eval()
        with torch.no_grad():
            host(example_input)
        host.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
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
            spec = _from_fx(host, sites)
        except Exception:  # noqa: BLE001 - any untraceable host falls back, and says so
            spec = _from_hooks(host, sites, example_input)
    named = dict(host.named_modules())
    for name in spec.nodes:
        module = named.get(name.removeprefix("slot:")) if name.startswith("slot:") else named[name]
        spec.kinds.append("slot" if name.startswith("slot:") else module_kind(module))  # type: ignore[arg-type]
        spec.params.append(
            0 if name.startswith("slot:") else sum(p.numel() for p in module.parameters())  # type: ignore[union-attr]
        )
    return spec


def undirected(edges: Iterable[tuple[int, int]]) -> torch.Tensor:
    """[2, 2E] edge_index with both directions: information flows up and down the model."""
    pairs = list(edges)
    if not pairs:
        return torch.zeros((2, 0), dtype=torch.long)
    forward = torch.tensor(pairs, dtype=torch.long).t()
    return torch.cat([forward, forward.flip(0)], dim=1)
