"""A small CIFAR-style ResNet (3x32x32): three stages of one basic block each."""

from __future__ import annotations

import torch
from torch import nn

from esper.models.checks import sizes


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetSmall(nn.Module):
    config_name = "resnet_small"
    takes = "values"

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, widths: list[int] | tuple[int, ...]
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"model=resnet_small needs image input [C, H, W]; the dataset gives "
                f"{list(input_shape)}"
            )
        widths = sizes("model.widths", widths)
        if len(widths) != 3:
            raise ValueError(f"model.widths={widths} must be three sizes >= 1")
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        self.layer1 = BasicBlock(widths[0], widths[0], 1)
        self.layer2 = BasicBlock(widths[0], widths[1], 2)
        self.layer3 = BasicBlock(widths[1], widths[2], 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.head(self.pool(x).flatten(1))
