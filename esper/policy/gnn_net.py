"""The GNN policy's network: message passing over the model graph, then four heads.

Compact on purpose (hidden 32, two layers: about 12k parameters): a decision must cost nothing
next to an epoch, on hosts of any size, and the checkpoint ships in the repository.

- operation: logits over `masks.OPERATIONS`, from the graph embedding;
- slot: one logit per slot node, from its embedding and the graph's;
- blueprint: one logit per (slot, blueprint), a slot query dotted with a blueprint embedding
  built from the blueprint's features, so any library size works;
- value: the expected return, for policy-gradient training (Simic).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from esper import blueprints as registry
from esper.policy.masks import OPERATIONS
from esper.policy.scatter import BackendChoice
from esper.seeds.graph_features import N_GLOBAL, N_NODE

KINDS = ("vector", "image", "sequence")
NAME_BUCKETS = 16
N_BLUEPRINT = len(KINDS) + NAME_BUCKETS


def blueprint_features(names: tuple[str, ...]) -> Tensor:
    """[blueprints, N_BLUEPRINT]: the activation kinds each takes, and its name hashed into one
    of 16 buckets (stable across processes, unlike `hash`), so that a policy can tell them apart
    without a fixed library."""
    rows = torch.zeros((len(names), N_BLUEPRINT))
    for i, name in enumerate(names):
        for kind in registry.get(name).kinds:
            rows[i, KINDS.index(kind)] = 1.0
        bucket = int(hashlib.sha256(name.encode()).hexdigest(), 16) % NAME_BUCKETS
        rows[i, len(KINDS) + bucket] = 1.0
    return rows


class ScatterConv(MessagePassing):
    """h' = relu(W_self h + W_neighbours mean(h_neighbours)); the mean goes through the
    scatter backend chosen for this device and graph size (`policy.scatter_backend`)."""

    def __init__(self, dim: int, backends: BackendChoice) -> None:
        super().__init__(aggr=None)
        _remove_generated_source(f"{type(self).__module__}_{type(self).__name__}_propagate")
        self.backends = backends
        self.own = nn.Linear(dim, dim)
        self.neighbours = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.propagate(edge_index, x=x)

    def message(self, x_j: Tensor) -> Tensor:
        return x_j

    def aggregate(self, inputs: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
        return self.backends.scatter(inputs, index, int(dim_size or 0), "mean")

    def update(self, aggregated: Tensor, x: Tensor) -> Tensor:
        return torch.relu(self.own(x) + self.neighbours(aggregated))


def _remove_generated_source(module_name: str) -> None:
    """PyG renders `propagate` from a template into a file in the temporary directory, imports
    it once a process and never removes it: every process that builds a policy (each run, each
    Simic episode worker) left one behind, thousands over a training. The module is in memory
    by now, so its file goes (a traceback through it then shows no source line)."""
    path = getattr(sys.modules.get(module_name), "__file__", None)
    if path and os.path.dirname(os.path.abspath(path)) == os.path.abspath(tempfile.gettempdir()):
        cached = importlib.util.cache_from_source(path)  # its bytecode, where Python wrote it
        for leftover in (path, cached):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        with contextlib.suppress(OSError):  # empty unless another process's is in it
            os.rmdir(os.path.dirname(cached))


@dataclass
class Heads:
    """One forward pass: logits per head and the value, for each graph of the batch."""

    operation: Tensor  # [graphs, ops]
    slot: Tensor  # [slots in the batch]
    blueprint: Tensor  # [slots in the batch, blueprints]
    value: Tensor  # [graphs]


OPERATION_PRIOR = {"wait": 0.0, "germinate": 0.0, "advance": 2.0, "fossilize": 2.0, "cull": -2.0}
"""The operation head's initial bias: untrained weights lean toward the lifecycle's own path
(advance and fossilize where legal, cull seldom). With an even start a seed met a cull at
about one step in four, so almost none lived to be kept and training rarely saw what a kept
seed earns; PPO moves these logits from here."""


class PolicyNet(nn.Module):
    def __init__(self, hidden: int, layers: int, backends: BackendChoice) -> None:
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.backends = backends
        self.encode = nn.Sequential(nn.Linear(N_NODE, hidden), nn.ReLU())
        self.convs = nn.ModuleList(ScatterConv(hidden, backends) for _ in range(layers))
        self.globals = nn.Sequential(nn.Linear(N_GLOBAL, hidden), nn.ReLU())
        self.graph = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.ReLU())
        self.operation = nn.Linear(hidden, len(OPERATIONS))
        with torch.no_grad():
            self.operation.bias.copy_(torch.tensor([OPERATION_PRIOR[op] for op in OPERATIONS]))
        self.slot = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.query = nn.Linear(2 * hidden, hidden)
        self.blueprint = nn.Sequential(nn.Linear(N_BLUEPRINT, hidden), nn.ReLU())
        self.value = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        u: Tensor,
        slot_index: Tensor,
        blueprints: Tensor,
        batch: Tensor | None = None,
        num_graphs: int = 1,
        slot_batch: Tensor | None = None,
    ) -> Heads:
        """`batch` [nodes] and `slot_batch` [slots] name each node's and slot's graph (None:
        one graph); `blueprints` [B, N_BLUEPRINT] is the library's features."""
        h = self.encode(x)
        for conv in self.convs:
            h = conv(h, edge_index)
        if batch is None:
            pooled = torch.cat([h.mean(0, keepdim=True), h.max(0, keepdim=True).values], dim=1)
        else:
            pooled = torch.cat(
                [
                    self.backends.scatter(h, batch, num_graphs, "mean"),
                    self.backends.scatter(h, batch, num_graphs, "max"),
                ],
                dim=1,
            )
        g = self.graph(torch.cat([pooled, self.globals(u)], dim=1))
        slots = h[slot_index]
        context = g[slot_batch] if slot_batch is not None else g.expand(len(slot_index), -1)
        both = torch.cat([slots, context], dim=1)
        blueprint = self.query(both) @ self.blueprint(blueprints).t() / math.sqrt(self.hidden)
        return Heads(
            operation=self.operation(g),
            slot=self.slot(both).squeeze(-1),
            blueprint=blueprint,
            value=self.value(g).squeeze(-1),
        )

    def use(self, backends: BackendChoice) -> None:
        """Aggregate through `backends` from now on (chosen once the graph's size is known)."""
        self.backends = backends
        for conv in self.convs:
            conv.backends = backends  # type: ignore[assignment]

    def architecture(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "layers": self.layers,
            "node_features": N_NODE,
            "global_features": N_GLOBAL,
            "blueprint_features": N_BLUEPRINT,
        }
