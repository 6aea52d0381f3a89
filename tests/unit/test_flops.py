"""FLOPs as Esper counts them: attention on the CPU included."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from esper.training.flops import forward_flops, train_step_flops


class Attention(nn.Module):
    """Self-attention through torch's fused kernel, or written out as matmuls."""

    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.unflatten(-1, (2, 4)).transpose(1, 2)  # [B, heads 2, T, 4]
        if self.fused:
            out = F.scaled_dot_product_attention(q, q, q)
        else:
            out = (q @ q.transpose(-1, -2) / 2).softmax(-1) @ q
        return self.head(out.transpose(1, 2).flatten(-2)).mean(1)


def test_attention_on_the_cpu_counts_its_matmuls() -> None:
    """helper-found: F.scaled_dot_product_attention counted 0 FLOPs on the CPU (torch's
    counter knows only its GPU kernels), so an attention seed's FLOPs were its projections'
    and a transformer host's 23% short."""
    x = torch.randn(2, 16, 8)
    fused, written = forward_flops(Attention(True), x), forward_flops(Attention(False), x)
    head = 2 * 2 * 16 * 8 * 3
    assert fused == written > head, "q@k and scores@v, as the matmuls count"
    y = torch.tensor([0, 1])
    assert train_step_flops(Attention(True), x, y) > 3 * head
