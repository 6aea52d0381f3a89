"""The GNN policy's aggregation, per reduction, on both scatter backends: one forward + backward
(training) and one forward under no_grad (a decision), at a 1,000-node and a 10,000-node graph
(edges = 2 x nodes, 64 features), one thread.

`test_torch` times the native backend; `test_torch_scatter` times torch-scatter and reports
torch_scatter/torch measured in the same run, interleaved (skipped with the reason when
torch-scatter is not installed); `test_auto` shows what `policy.scatter_backend=auto` picks from
its own short measurement. No time is asserted: the choice follows measurement, and the figures
are what it follows. Only equal outputs and gradients are asserted.

Run: `.venv/bin/pytest tests/benchmarks/test_scatter_backends.py`
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from esper.policy.scatter import (
    REDUCTIONS,
    Backend,
    Passes,
    Reduce,
    scatter,
)
from esper.policy.scatter_choice import ScatterBackends
from tests.benchmarks.conftest import interleaved_ratio

NODES = (1_000, 10_000)
FEATURES = 64
PASSES: tuple[Passes, ...] = ("forward+backward", "forward")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def inputs(nodes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(nodes)
    src = torch.randn(2 * nodes, FEATURES, generator=gen).requires_grad_(True)
    index = torch.randint(0, nodes, (2 * nodes,), generator=gen)
    grad = torch.randn(nodes, FEATURES, generator=gen)
    return src, index, grad


def step(
    src: torch.Tensor,
    index: torch.Tensor,
    grad: torch.Tensor,
    reduce: Reduce,
    backend: Backend,
    passes: Passes,
) -> Callable[[], None]:
    nodes = grad.shape[0]

    def train() -> None:
        scatter(src, index, nodes, reduce, backend).backward(grad)
        src.grad = None

    def decide() -> None:
        with torch.no_grad():
            scatter(src, index, nodes, reduce, backend)

    return train if passes == "forward+backward" else decide


def outputs(
    src: torch.Tensor, index: torch.Tensor, grad: torch.Tensor, reduce: Reduce, backend: Backend
) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = src.detach().clone().requires_grad_(True)
    out = scatter(leaf, index, grad.shape[0], reduce, backend)
    out.backward(grad)
    assert leaf.grad is not None
    return out.detach(), leaf.grad


@pytest.mark.parametrize("passes", PASSES)
@pytest.mark.parametrize("nodes", NODES)
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_torch(benchmark, reduce: Reduce, nodes: int, passes: Passes) -> None:
    src, index, grad = inputs(nodes)
    benchmark.group = f"scatter {reduce} {nodes} nodes {passes}"
    benchmark(step(src, index, grad, reduce, "torch", passes))


@pytest.mark.parametrize("passes", PASSES)
@pytest.mark.parametrize("nodes", NODES)
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_torch_scatter(benchmark, reduce: Reduce, nodes: int, passes: Passes) -> None:
    pytest.importorskip("torch_scatter", reason="torch_scatter not installed (make accel)")
    src, index, grad = inputs(nodes)
    native, accel = (outputs(src, index, grad, reduce, b) for b in ("torch", "torch_scatter"))
    torch.testing.assert_close(native, accel, rtol=0, atol=0)

    ratio, accel_us, native_us = interleaved_ratio(
        step(src, index, grad, reduce, "torch_scatter", passes),
        step(src, index, grad, reduce, "torch", passes),
        rounds=15,
        calls=10,
    )
    benchmark.group = f"scatter {reduce} {nodes} nodes {passes}"
    benchmark.extra_info.update(
        torch_scatter_over_torch=ratio, torch_scatter_us=accel_us, torch_us=native_us
    )
    benchmark(step(src, index, grad, reduce, "torch_scatter", passes))
    print(
        f"\nscatter {reduce:4s} {nodes:>6,} nodes {passes:16s}: torch {native_us:9.1f} us, "
        f"torch_scatter {accel_us:9.1f} us, torch_scatter/torch {ratio:6.2f}x"
    )


@pytest.mark.parametrize("passes", PASSES)
@pytest.mark.parametrize("nodes", NODES)
def test_auto(benchmark, tmp_path, nodes: int, passes: Passes) -> None:
    """What `auto` measures and picks at this size (a fresh cache: it measures), and the three
    reductions on its choice."""
    chosen = ScatterBackends(tmp_path).choose(
        "auto", torch.device("cpu"), num_edges=2 * nodes, features=FEATURES, passes=passes
    )
    benchmark.group = f"scatter auto {nodes} nodes {passes}"
    benchmark.extra_info.update(choice=chosen.choice, figures_us=chosen.figures_us)
    src, index, grad = inputs(nodes)
    steps = [step(src, index, grad, r, chosen.choice[r], passes) for r in REDUCTIONS]
    benchmark(lambda: [run() for run in steps])
    print(f"\n{nodes:,} nodes: {chosen.summary()}")
