"""Built-in blueprints. Each zero-initialises the layer that produces its output."""

from __future__ import annotations

import torch
from torch import nn

from esper.blueprints.registry import register


def _zero(layer: nn.Module) -> nn.Module:
    for p in layer.parameters():
        nn.init.zeros_(p)
    return layer


@register("residual_mlp", kinds=("vector",), description="two-layer MLP on the residual", hidden=64)
def residual_mlp(shape: tuple[int, ...], hidden: int) -> nn.Module:
    (features,) = shape
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), _zero(nn.Linear(hidden, features)))


@register("low_rank", kinds=("vector",), description="LoRA-style low-rank adapter", rank=4)
def low_rank(shape: tuple[int, ...], rank: int) -> nn.Module:
    (features,) = shape
    return nn.Sequential(
        nn.Linear(features, rank, bias=False), _zero(nn.Linear(rank, features, bias=False))
    )


@register(
    "conv_residual", kinds=("image",), description="two 3x3 convolutions on the residual", width=0
)
def conv_residual(shape: tuple[int, ...], width: int) -> nn.Module:
    channels = shape[0]
    hidden = width or channels
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1),
        nn.ReLU(),
        _zero(nn.Conv2d(hidden, channels, 3, padding=1)),
    )


class SqueezeExciteDelta(nn.Module):
    """x * tanh(g(x)): a channel gate whose delta is zero while the gate's last layer is zero."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = _zero(nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.tanh(self.excite(torch.relu(self.squeeze(x.mean(dim=(2, 3))))))
        return x * gate[:, :, None, None]


@register("squeeze_excite", kinds=("image",), description="channel gating", reduction=4)
def squeeze_excite(shape: tuple[int, ...], reduction: int) -> nn.Module:
    return SqueezeExciteDelta(shape[0], reduction)
