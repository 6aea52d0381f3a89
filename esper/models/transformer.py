"""A tiny char-level causal transformer: token and position embeddings, pre-norm blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from esper.models.checks import integer


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerTiny(nn.Module):
    """Input [B, T] token ids, output [B, T, vocab] logits; no position sees a later one."""

    causal = True
    config_name = "transformer_tiny"
    takes = "tokens"

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int, heads: int
    ) -> None:
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(
                f"model=transformer_tiny needs token sequences [T]; the dataset gives "
                f"{list(input_shape)}"
            )
        width = integer("model.width", width, 1)
        heads = integer("model.heads", heads, 1)
        depth = integer("model.depth", depth, 1)
        if width % heads:
            raise ValueError(f"model.heads={heads} must divide model.width={width}")
        self.tokens = nn.Embedding(num_classes, width)
        self.positions = nn.Parameter(torch.zeros(input_shape[0], width))
        nn.init.normal_(self.positions, std=0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))
