"""The GNN policy's decision, observation to decision including the feature update, at about
100, 1,000 and 10,000 graph nodes, one thread; in the same run a reference network shaped like
the earlier platform's controller (4 multi-head GAT layers, 4 GCN layers, hidden 128, mean+max
pooling) on the same graphs, as a ratio; the graph build time for the big host; and the
per-reduction scatter figures that `policy.scatter_backend=auto` chose from.

Targets (DESIGN.md, issue 9): <= 1 ms median at 1,000 nodes on this CPU, and about linear growth
(10,000 nodes within 12x of 1,000). Times are reported, never asserted; only correctness is
(every decision legal, the reference's output finite).

The hosts are deep residual MLPs (blocks of `x + relu(linear(x))`, width 8) with 10 sites spread
over the depth: each block is two graph nodes (its Linear and the residual add), plus one node
per slot and one for the head.

Run: `.venv/bin/pytest tests/benchmarks/test_gnn_policy.py`
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, global_max_pool, global_mean_pool

import esper
from esper.contracts import Decision, Observation, SeedState, SiteStats, SlotObservation
from esper.policy import GnnPolicy
from esper.policy.scatter_choice import ScatterBackends
from esper.seeds import MorphogeneticModel
from tests.benchmarks.conftest import interleaved_ratio

SIZES = (100, 1_000, 10_000)
SITES = 10
WIDTH = 8
VECTOR = ("residual_mlp", "low_rank")
# (rounds, calls per round) of the interleaved reference/GNN ratio, sized to the reference's cost;
# few calls a round, many rounds: on a shared 2-core machine a preempted call (a few ms) then
# moves one round's ratio, not the median
RATIO_ROUNDS = {100: (41, 5), 1_000: (41, 2), 10_000: (11, 1)}
FIGURES: dict[str, float] = {}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the hosts -------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.relu(self.linear(x))


class DeepResidualMLP(nn.Module):
    def __init__(self, blocks: int, width: int = WIDTH) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(Block(width) for _ in range(blocks)))
        self.head = nn.Linear(width, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(x))


def host_for(nodes: int) -> tuple[DeepResidualMLP, list[str]]:
    """A host whose graph has about `nodes` nodes: 2 per block, one per slot, one for the head."""
    blocks = (nodes - SITES - 1) // 2
    step = blocks // SITES
    return DeepResidualMLP(blocks), [f"blocks.{i * step}" for i in range(SITES)]


def example_input() -> Tensor:
    return torch.randn(2, WIDTH, generator=torch.Generator().manual_seed(0))


def observation(model: MorphogeneticModel) -> Observation:
    """All slots DORMANT, with site stats; every vector blueprint allowed everywhere."""
    names = [s.name for s in model.iter_slots()]
    return Observation(
        epoch=2,
        max_epochs=10,
        train_loss=0.5,
        train_accuracy=0.7,
        val_loss=0.6,
        val_accuracy=0.6,
        val_loss_history=(0.8, 0.7, 0.6),
        slots=tuple(
            SlotObservation(
                name=name,
                kind="vector",
                shape=(WIDTH,),
                state=SeedState.DORMANT,
                stats=SiteStats(activation_mean=0.1, activation_std=1.0, grad_norm=0.1 * (i + 1)),
            )
            for i, name in enumerate(names)
        ),
        allowed_blueprints=dict.fromkeys(names, VECTOR),
    )


# --- the reference: the earlier platform's controller, shaped -------------------------------


class Reference(nn.Module):
    """x projected to 128; 4 GAT layers (4 heads of 32, concatenated); 4 GCN layers (128);
    mean+max pooling; a small head (5 operation logits and a value)."""

    def __init__(self, features: int, hidden: int = 128, heads: int = 4) -> None:
        super().__init__()
        self.project = nn.Linear(features, hidden)
        self.gat = nn.ModuleList(GATConv(hidden, hidden // heads, heads=heads) for _ in range(4))
        self.gcn = nn.ModuleList(GCNConv(hidden, hidden) for _ in range(4))
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 6))

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = torch.relu(self.project(x))
        for gat in self.gat:
            h = nn.functional.elu(gat(h, edge_index))
        for gcn in self.gcn:
            h = torch.relu(gcn(h, edge_index))
        pooled = torch.cat([global_mean_pool(h, None), global_max_pool(h, None)], dim=-1)
        return self.head(pooled)


# --- one case per size -----------------------------------------------------------------------


@dataclass
class Case:
    model: MorphogeneticModel
    obs: Observation
    policy: GnnPolicy
    reference: Reference

    def decide(self) -> list[Decision]:
        """One control step: the feature update, then the decision."""
        self.model.graph.update(self.obs, {}, {})
        return self.policy.decide(self.obs.model_copy(update={"graph": self.model.graph}))

    def refer(self) -> Tensor:
        data = self.model.graph.data
        with torch.no_grad():
            return self.reference(data.x, data.edge_index)


@pytest.fixture(scope="module")
def scatter_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache, so that `auto` measures in this run rather than reading an older one."""
    return tmp_path_factory.mktemp("scatter-cache")


@cache
def case(nodes: int, cache_dir: Path) -> Case:
    host, sites = host_for(nodes)
    model = esper.wrap(host, sites, example_input())
    assert model.graph is not None and model.graph.source == "fx"
    assert abs(model.graph.num_nodes - nodes) <= 0.02 * nodes, model.graph.num_nodes
    policy = GnnPolicy(seed=0, scatter_backend="auto")
    policy.backends = ScatterBackends(cache_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = Reference(int(model.graph.data.x.shape[1])).eval()
    return Case(model, observation(model), policy, reference)


def assert_legal(decisions: list[Decision], obs: Observation) -> None:
    (decision,) = decisions
    assert decision.action in ("wait", "germinate")  # all slots DORMANT: nothing else is legal
    if decision.action == "germinate":
        assert decision.slot in obs.allowed_blueprints
        assert decision.blueprint in obs.allowed_blueprints[decision.slot]


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(line)


# --- the benchmarks --------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", SIZES)
def test_decision(benchmark, capsys, scatter_cache: Path, nodes: int) -> None:
    """GNN policy decision (update + decide), median; reference/GNN ratio, interleaved."""
    c = case(nodes, scatter_cache)
    assert_legal(c.decide(), c.obs)  # the first decide makes the `auto` choice
    assert c.policy.choice is not None
    choice = c.policy.choice.model_dump(mode="json")
    out = c.refer()
    assert out.shape == (1, 6) and bool(torch.isfinite(out).all())

    rounds, calls = RATIO_ROUNDS[nodes]
    ratio, reference_us, gnn_us = interleaved_ratio(c.refer, c.decide, rounds=rounds, calls=calls)
    benchmark.group = "gnn-policy decision"
    decisions = benchmark(c.decide)
    assert_legal(decisions, c.obs)
    median_ms = benchmark.stats.stats.median * 1e3
    FIGURES[f"gnn_ms_{nodes}"] = median_ms
    benchmark.extra_info.update(
        graph_nodes=c.model.graph.num_nodes,
        graph_edges=int(c.model.graph.data.edge_index.shape[1]),
        median_ms=median_ms,
        reference_ms=reference_us / 1e3,
        reference_over_gnn=ratio,
        gnn_ms_interleaved=gnn_us / 1e3,
        scatter=choice,
    )
    report(
        capsys,
        f"\n{c.model.graph.num_nodes:>6,} nodes "
        f"({int(c.model.graph.data.edge_index.shape[1]):,} directed edges): "
        f"GNN policy {median_ms:.3f} ms median (interleaved {gnn_us / 1e3:.3f} ms), "
        f"reference {reference_us / 1e3:.3f} ms, reference/GNN {ratio:.1f}x\n"
        f"  scatter choice: {c.policy.choice.summary()}\n"
        f"  policy.choice.model_dump(): {choice}",
    )


def test_growth_10k_over_1k(capsys, scatter_cache: Path) -> None:
    """GNN decision at 10,000 nodes / at 1,000, interleaved in the same run (target <= 12x)."""
    big, small = case(10_000, scatter_cache), case(1_000, scatter_cache)
    for c in (big, small):
        assert_legal(c.decide(), c.obs)
    ratio, big_us, small_us = interleaved_ratio(big.decide, small.decide, rounds=41, calls=2)
    FIGURES["growth_10k_over_1k"] = ratio
    report(
        capsys,
        f"\nGNN policy growth: 10k {big_us / 1e3:.3f} ms / 1k {small_us / 1e3:.3f} ms = "
        f"{ratio:.2f}x (target <= 12x; nodes {big.model.graph.num_nodes:,} / "
        f"{small.model.graph.num_nodes:,})",
    )
    assert math.isfinite(ratio)


def test_graph_build_big_host(benchmark, capsys) -> None:
    """`esper.wrap` (probe, torch.fx trace, graph build) of the ~10,000-node host, one call."""
    nodes = SIZES[-1]

    def setup() -> tuple[tuple[DeepResidualMLP, list[str], Tensor], dict[str, object]]:
        host, sites = host_for(nodes)
        return (host, sites, example_input()), {}

    wrap: Callable[..., MorphogeneticModel] = esper.wrap
    benchmark.group = "gnn-policy graph build"
    model = benchmark.pedantic(wrap, setup=setup, rounds=1)
    assert model.graph is not None and model.graph.source == "fx"
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update(graph_nodes=model.graph.num_nodes, build_s=seconds)
    report(
        capsys,
        f"\ngraph build (esper.wrap) of the {model.graph.num_nodes:,}-node host: {seconds:.2f} s",
    )
