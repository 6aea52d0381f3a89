"""All-dormant wrapped host vs the unwrapped host: one training step, target <= 1.02x."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import esper
from esper.models import CNN, MLP
from tests.benchmarks.conftest import interleaved_ratio

TARGET = 1.02

HOSTS = {
    "mlp": (lambda: MLP((2,), 2, [8, 8]), (2,), 2, ["blocks.0", "blocks.1"]),
    "mlp_wide": (lambda: MLP((64,), 10, [256, 256]), (64,), 10, ["blocks.0", "blocks.1"]),
    "cnn": (lambda: CNN((1, 8, 8), 10, [8, 16]), (1, 8, 8), 10, ["blocks.0", "blocks.1"]),
}


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


@pytest.mark.parametrize("host_name", list(HOSTS))
def test_all_dormant_train_step_overhead(benchmark, host_name: str) -> None:
    make, shape, classes, sites = HOSTS[host_name]
    torch.manual_seed(0)
    host = make()
    wrapped = esper.wrap(copy.deepcopy(host), sites, example_input=torch.randn(2, *shape))
    x, y = torch.randn(64, *shape), torch.randint(0, classes, (64,))
    host_step, wrapped_step = train_step(host, x, y), train_step(wrapped, x, y)
    ratio, wrapped_us, host_us = interleaved_ratio(wrapped_step, host_step)
    benchmark.extra_info.update(ratio=ratio, wrapped_us=wrapped_us, host_us=host_us, target=TARGET)
    benchmark.group = "dormant-overhead"
    benchmark(wrapped_step)
    print(f"\n{host_name}: wrapped {wrapped_us:.1f}us host {host_us:.1f}us ratio {ratio:.4f}")
    assert ratio <= TARGET
