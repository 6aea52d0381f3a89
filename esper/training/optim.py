"""Seed parameters join the optimizer in their own group and leave it on cull.

LR schedulers keep one base lr per group; these helpers keep that list aligned with the groups.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau


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
    if isinstance(scheduler, ReduceLROnPlateau):  # a floor per group, and the last rates
        scheduler.min_lrs.append(scheduler.min_lrs[0] if scheduler.min_lrs else 0.0)
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
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.min_lrs.pop(index)
        if len(scheduler._last_lr) > index:
            scheduler._last_lr.pop(index)
    return sum(p.numel() for p in group["params"])


def step_scheduler(scheduler: Any, val_loss: float) -> None:
    """The scheduler's step, once an epoch after validation: ReduceLROnPlateau's on the val
    loss (the plateau it watches; decisions read validation only), any other's by the
    epoch."""
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()


def group_names(optimizer: torch.optim.Optimizer) -> list[str]:
    return [g.get("name", "") for g in optimizer.param_groups]


class Optimization:
    """The run's optimizer and LR scheduler, with one parameter group per seed in the forward.

    The host's group comes first and is named `host`; a seed's group is `seed:<slot>`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None = None,
        seed_lr: float | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.seed_lr = seed_lr

    def add_seed(self, slot_name: str, params: list[nn.Parameter]) -> None:
        add_group(self.optimizer, self.scheduler, f"seed:{slot_name}", params, self.seed_lr)

    def remove_seed(self, slot_name: str) -> None:
        """Drop the slot's group if it has one (a seed culled before attachment has none)."""
        if f"seed:{slot_name}" in group_names(self.optimizer):
            remove_group(self.optimizer, self.scheduler, f"seed:{slot_name}")

    def seed_groups(self) -> list[str]:
        """Slot names of the seed groups, in optimizer order."""
        return [n.removeprefix("seed:") for n in group_names(self.optimizer)[1:]]

    def state_dict(self) -> dict[str, Any]:
        return {
            "groups": group_names(self.optimizer),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any], seed_params: dict[str, Any]) -> None:
        """Recreate the seed groups (`seed_params`: slot name -> parameters), then load."""
        for group in state["groups"][1:]:
            slot_name = group.removeprefix("seed:")
            self.add_seed(slot_name, seed_params[slot_name])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
