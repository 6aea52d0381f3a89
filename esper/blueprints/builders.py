"""Built-in blueprints. Each zero-initialises the layer that produces its output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from esper.blueprints.registry import register


def _zero(layer: nn.Module) -> nn.Module:
    for p in layer.parameters():
        nn.init.zeros_(p)
    return layer


@register(
    "residual_mlp",
    kinds=("vector", "sequence"),
    description="two-layer MLP on the residual",
    hidden=64,
)
def residual_mlp(shape: tuple[int, ...], hidden: int) -> nn.Module:
    features = shape[-1]
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), _zero(nn.Linear(hidden, features)))


@register(
    "residual_block",
    kinds=("vector", "sequence"),
    description="two-layer MLP of the site's own width on the residual (depth, not width)",
    width=0,
)
def residual_block(shape: tuple[int, ...], width: int) -> nn.Module:
    """`residual_mlp` sized to the site (`width=0`: the site's features). On a small host a
    64-wide residual MLP is many times the host; this adds a layer of depth for about
    2 x features^2 parameters (144 on a width-8 site against 1,096), which is where most of
    the accuracy comes from on spirals (experiments/gnn_policy.md)."""
    return residual_mlp(shape, hidden=width or shape[-1])


@register(
    "low_rank",
    kinds=("vector", "sequence"),
    description="LoRA-style low-rank adapter",
    linear=True,
    rank=4,
)
def low_rank(shape: tuple[int, ...], rank: int) -> nn.Module:
    features = shape[-1]
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


@register(
    "depthwise_separable",
    kinds=("image",),
    description="depthwise 3x3 then pointwise 1x1",
    multiplier=1,
)
def depthwise_separable(shape: tuple[int, ...], multiplier: int) -> nn.Module:
    channels = shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, channels * multiplier, 3, padding=1, groups=channels),
        nn.ReLU(),
        _zero(nn.Conv2d(channels * multiplier, channels, 1)),
    )


class GroupNormGate(nn.Module):
    """GroupNorm, a 1x1 projection, and a tanh gate on the input; the gate's per-channel scale
    is zero at birth."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        groups = max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)
        self.norm = nn.GroupNorm(groups, channels)
        self.project = nn.Conv2d(channels, channels, 1)
        self.scale = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(self.scale * self.project(self.norm(x)))


@register("group_norm_gate", kinds=("image",), description="normalised spatial gate", groups=4)
def group_norm_gate(shape: tuple[int, ...], groups: int) -> nn.Module:
    return GroupNormGate(shape[0], groups)


@register(
    "bottleneck",
    kinds=("image",),
    description="1x1 reduce, 3x3, 1x1 expand (ResNet style)",
    reduction=4,
)
def bottleneck(shape: tuple[int, ...], reduction: int) -> nn.Module:
    channels = shape[0]
    hidden = max(1, channels // reduction)
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 1),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 3, padding=1),
        nn.ReLU(),
        _zero(nn.Conv2d(hidden, channels, 1)),
    )


class SelfAttentionDelta(nn.Module):
    """Multi-head self-attention over the sequence; causal masks the future. Output projection
    is zero at birth."""

    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention: heads={heads} must divide the model width {dim}")
        self.heads = heads
        self.causal = causal
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = _zero(nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(attended.transpose(1, 2).reshape(batch, length, dim))


@register(
    "attention",
    kinds=("sequence",),
    description="self-attention (causal by default)",
    heads=2,
    causal=True,
)
def attention(shape: tuple[int, ...], heads: int, causal: bool) -> nn.Module:
    return SelfAttentionDelta(shape[-1], heads, causal)
