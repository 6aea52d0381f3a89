"""Deliberately small hosts: seeds have room to add capacity where it helps."""

from __future__ import annotations

import math

import torch
from torch import nn

from esper.models.checks import sizes


class MLP(nn.Module):
    """Flattens its input; each hidden block (Linear + ReLU) is a candidate seed site `blocks.i`."""

    config_name = "mlp"
    takes = "values"

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, hidden: list[int] | tuple[int, ...]
    ) -> None:
        super().__init__()
        widths = [math.prod(input_shape), *sizes("model.hidden", hidden)]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(widths[:-1], widths[1:])
        )
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class CNN(nn.Module):
    """Conv blocks (Conv + ReLU) named `blocks.i` are the seed sites; a linear head classifies."""

    config_name = "cnn"
    takes = "values"

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, channels: list[int] | tuple[int, ...]
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"model=cnn needs image input [C, H, W]; the dataset gives {list(input_shape)}"
            )
        widths = [input_shape[0], *sizes("model.channels", channels)]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, kernel_size=3, padding=1), nn.ReLU())
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(widths[-1] * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(self.pool(x).flatten(1))
