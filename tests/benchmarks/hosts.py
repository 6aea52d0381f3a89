"""The hosts the overhead benchmarks run on, with a batch of their input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from esper.models import CNN, MLP, TransformerTiny


@dataclass
class BenchHost:
    make: Callable[[], nn.Module]
    sites: list[str]
    blueprint: str
    inputs: Callable[[], tuple[torch.Tensor, torch.Tensor]]


def _batch(shape: tuple[int, ...], classes: int, batch: int = 64):
    def make() -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        return torch.randn(batch, *shape, generator=generator), torch.randint(
            0, classes, (batch,), generator=generator
        )

    return make


def _tokens(length: int, vocab: int, batch: int = 32):
    def make() -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (batch, length + 1), generator=generator)
        return ids[:, :-1], ids[:, 1:]

    return make


HOSTS = {
    "mlp": BenchHost(
        lambda: MLP((2,), 2, [8, 8]), ["blocks.0", "blocks.1"], "residual_mlp", _batch((2,), 2)
    ),
    "mlp_wide": BenchHost(
        lambda: MLP((64,), 10, [256, 256]),
        ["blocks.0", "blocks.1"],
        "residual_mlp",
        _batch((64,), 10),
    ),
    "cnn": BenchHost(
        lambda: CNN((1, 8, 8), 10, [8, 16]),
        ["blocks.0", "blocks.1"],
        "conv_residual",
        _batch((1, 8, 8), 10),
    ),
    "transformer_tiny": BenchHost(
        lambda: TransformerTiny((64,), 100, width=32, depth=2, heads=2),
        ["blocks.0", "blocks.1"],
        "residual_mlp",
        _tokens(64, 100),
    ),
}
