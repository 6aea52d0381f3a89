"""All-dormant wrapped host vs the unwrapped host: one training step, target <= 1.02x."""

from __future__ import annotations

import copy

import pytest
import torch

import esper
from esper.training.steps import token_loss
from tests.benchmarks.conftest import interleaved_ratio
from tests.benchmarks.hosts import HOSTS

TARGET = 1.02


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        token_loss(model(x), y).backward()
        optimizer.step()

    return step


@pytest.mark.parametrize("host_name", list(HOSTS))
def test_all_dormant_train_step_overhead(benchmark, host_name: str) -> None:
    spec = HOSTS[host_name]
    torch.manual_seed(0)
    host = spec.make()
    x, y = spec.inputs()
    wrapped = esper.wrap(copy.deepcopy(host), spec.sites, example_input=x[:2])
    host_step, wrapped_step = train_step(host, x, y), train_step(wrapped, x, y)
    ratio, wrapped_us, host_us = interleaved_ratio(wrapped_step, host_step)
    benchmark.extra_info.update(ratio=ratio, wrapped_us=wrapped_us, host_us=host_us, target=TARGET)
    benchmark.group = "dormant-overhead"
    benchmark(wrapped_step)
    print(f"\n{host_name}: wrapped {wrapped_us:.1f}us host {host_us:.1f}us ratio {ratio:.4f}")
    assert ratio <= TARGET
