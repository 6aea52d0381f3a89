"""Shadow hosts: the counterfactual a blending seed is judged against (`seeds.contribution=shadow`).

Why: switching a blended seed off (`bypass`) measures what the host has come to rely on, not
what the seed bought. While a seed blends in, the host co-adapts to it, so its bypassed
"contribution" reads large even when the grown model is no better than the host would have
been without it (digits/MLP: a residual block reads +0.06..+0.25 val accuracy bypassed, and
lifts val by 0.0014 over the host alone). A shadow is a copy of the model, taken when the seed
starts blending, with that seed switched off, trained on the same batches with the same
optimizer state and learning rate. At the verdict the seed's contribution is the grown model's
val metric minus the shadow's. A culled seed's model is restored from its shadow: the run goes
on exactly as if the seed had never blended in.

Cost: one more forward and backward of the host per training step while a seed blends (counted
in the run's training FLOPs) and the memory of one model copy per blending seed.
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from esper.seeds import MorphogeneticModel, SeedSlot
from esper.training.flops import train_step_flops
from esper.training.optim import group_names, remove_group
from esper.training.steps import token_loss


@dataclass
class Shadow:
    """One blending seed's counterfactual: the model without it, and that model's optimizer."""

    model: MorphogeneticModel
    optimizer: torch.optim.Optimizer
    flops_per_sample: int
    """Forward + backward FLOPs of one training sample through the shadow."""


def _copy(model: MorphogeneticModel, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
    """Deep-copy the model and optimizer together (the copy's optimizer then holds the copy's
    parameters), without the slots' transition callbacks (they publish the run's events)."""
    callbacks = {s.name: s.on_transition for s in model.iter_slots()}
    for slot in model.iter_slots():
        slot.on_transition = None
    try:
        with warnings.catch_warnings():
            # torch's exported kernels deep-copy their pytree specs through a deprecated path
            warnings.filterwarnings("ignore", re.escape("`isinstance(treespec, LeafSpec)`"))
            return copy.deepcopy((model, optimizer))
    finally:
        for slot in model.iter_slots():
            slot.on_transition = callbacks[slot.name]


class Shadows:
    """The shadow of every seed now blending, trained beside the run's model.

    Args:
        model: the run's model (a shadow starts as its copy).
        optimizer: the run's optimizer (its state and learning rates are the shadow's).
        example: one training sample (x, y), to count a shadow's training FLOPs.
    """

    def __init__(
        self,
        model: MorphogeneticModel,
        optimizer: torch.optim.Optimizer,
        example: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.example = example
        self.shadows: dict[str, Shadow] = {}

    def __contains__(self, slot_name: str) -> bool:
        return slot_name in self.shadows

    def model_of(self, slot_name: str) -> MorphogeneticModel:
        return self.shadows[slot_name].model

    def start(self, slot: SeedSlot) -> None:
        """`slot`'s seed starts blending: copy the model with that seed switched off."""
        shadow_model, shadow_optimizer = _copy(self.model, self.optimizer)
        shadow_model.slot(slot.name).bypass = True
        if f"seed:{slot.name}" in group_names(shadow_optimizer):
            remove_group(shadow_optimizer, None, f"seed:{slot.name}")
        flops = train_step_flops(shadow_model, *self.example)
        self.shadows[slot.name] = Shadow(shadow_model, shadow_optimizer, flops)

    def flops_per_sample(self) -> int:
        return sum(s.flops_per_sample for s in self.shadows.values())

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step of every shadow on the batch the run's model just trained on, at
        the run's current learning rates (a scheduler steps the run's optimizer only)."""
        if not self.shadows:
            return
        rates = {g.get("name"): g["lr"] for g in self.optimizer.param_groups}
        for shadow in self.shadows.values():
            for group in shadow.optimizer.param_groups:
                group["lr"] = rates.get(group.get("name"), group["lr"])
            shadow.model.train()
            shadow.optimizer.zero_grad(set_to_none=True)
            loss = token_loss(shadow.model(x), y)
            if not torch.isfinite(loss):
                continue  # as the run's guard does: skip the step, keep the weights
            loss.backward()
            shadow.optimizer.step()

    def drop(self, slot_name: str) -> None:
        """The seed was kept: its counterfactual is no longer needed."""
        self.shadows.pop(slot_name, None)

    def restore(self, slot_name: str) -> bool:
        """The seed was culled: put the shadow's weights, buffers and optimizer state into the
        run's model (every parameter the run's model still has). False if there was none."""
        shadow = self.shadows.pop(slot_name, None)
        if shadow is None:
            return False
        source_params = dict(shadow.model.named_parameters())
        source_buffers = dict(shadow.model.named_buffers())
        # A seed attached after the shadow was taken (another slot) is not in it: it keeps
        # its own weights and state.
        names: dict[int, str] = {}
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in source_params:
                    param.copy_(source_params[name])
                    names[id(param)] = name
            for name, buffer in self.model.named_buffers():
                if name in source_buffers:
                    buffer.copy_(source_buffers[name])
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                if id(param) not in names:
                    continue
                state = shadow.optimizer.state.get(source_params[names[id(param)]])
                if state is None:
                    self.optimizer.state.pop(param, None)
                else:
                    self.optimizer.state[param] = _clone(state)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            name: {"model": s.model.state_dict(), "optimizer": s.optimizer.state_dict()}
            for name, s in self.shadows.items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Recreate each shadow from the restored model, then load its own weights and state."""
        self.shadows = {}
        for name, saved in state.items():
            self.start(self.model.slot(name))
            shadow = self.shadows[name]
            shadow.model.load_state_dict(saved["model"])
            shadow.optimizer.load_state_dict(saved["optimizer"])


def _clone(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in state.items()
    }
