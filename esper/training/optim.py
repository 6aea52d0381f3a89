"""Seed parameters join the optimizer in their own group and leave it on cull.

LR schedulers keep one base lr per group; these helpers keep that list aligned with the groups.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def add_group(
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    name: str,
    params: list[nn.Parameter],
    lr: float | None = None,
) -> None:
    group: dict[str, Any] = {"params": params, "name": name}
    if lr is not None:
        group["lr"] = lr
    optimizer.add_param_group(group)
    added = optimizer.param_groups[-1]
    added.setdefault("initial_lr", added["lr"])
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs.append(added["initial_lr"])
        if hasattr(scheduler, "_last_lr"):
            scheduler._last_lr.append(added["lr"])


def remove_group(optimizer: torch.optim.Optimizer, scheduler: Any | None, name: str) -> int:
    """Drop the named group and its optimizer state; returns how many parameters left."""
    index = next((i for i, g in enumerate(optimizer.param_groups) if g.get("name") == name), None)
    if index is None:
        raise KeyError(f"optimizer has no parameter group {name!r}")
    group = optimizer.param_groups.pop(index)
    for p in group["params"]:
        optimizer.state.pop(p, None)
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs.pop(index)
        if hasattr(scheduler, "_last_lr") and len(scheduler._last_lr) > index:
            scheduler._last_lr.pop(index)
    return sum(p.numel() for p in group["params"])


def group_names(optimizer: torch.optim.Optimizer) -> list[str]:
    return [g.get("name", "") for g in optimizer.param_groups]
