"""The arithmetic of one step: the loss, evaluation on a split, and the run's clock.

Nothing here knows about seeds or policies; the loop and the control step build on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from esper.data import TensorLoader


def token_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for [B, C] logits with [B] targets and [B, T, V] logits with [B, T]."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction=reduction)


@dataclass(frozen=True)
class SplitMetrics:
    """Mean loss and accuracy over one split (per token for sequence models)."""

    loss: float
    accuracy: float


@dataclass
class Clock:
    """Where the run is: the epoch being trained and the optimizer steps taken so far. Shared
    by the loop (which advances it) and the parts that stamp events with it."""

    epoch: int = 0
    step: int = 0


def device_batches(
    loader: TensorLoader, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader: TensorLoader, device: torch.device) -> SplitMetrics:
    """Loss and accuracy over a whole split, in eval mode, without gradients."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in device_batches(loader, device):
        logits = model(x)
        loss_sum += token_loss(logits, y, reduction="sum").item()
        correct += int((logits.argmax(-1) == y).sum().item())
        seen += y.numel()
    return SplitMetrics(loss_sum / seen, correct / seen)
