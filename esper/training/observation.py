"""What the policy sees: one Observation per control step, gathered from the model and data.

Site statistics come from one extra forward/backward on the first training batch in eval mode;
a blending seed's contribution from one extra validation pass, with the seed bypassed or of its
shadow (`seeds.contribution`). Both are the policy's only extra cost per control step besides
its own decision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from esper.contracts import Observation, SeedState, SiteStats, SlotObservation
from esper.data import DataSplits
from esper.seeds import MorphogeneticModel, SeedSlot
from esper.training.shadow import Shadows
from esper.training.steps import SplitMetrics, evaluate, token_loss


class Observer:
    """Builds observations for one model on one dataset."""

    def __init__(
        self,
        model: MorphogeneticModel,
        data: DataSplits,
        device: torch.device,
        allowed: dict[str, tuple[str, ...]],
        max_epochs: int,
        latency_us: dict[str, float] | None = None,
        shadows: Shadows | None = None,
    ) -> None:
        self.model = model
        self.shadows = shadows
        self.latency_us = latency_us if latency_us is not None else {}
        self.data = data
        self.device = device
        self.allowed = allowed
        self.max_epochs = max_epochs

    def site_stats(self) -> dict[str, SiteStats]:
        """Activation and gradient statistics at every site from one training batch."""
        self.model.eval()
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for slot in self.model.iter_slots():

            def hook(
                module: nn.Module, args: object, out: torch.Tensor, name: str = slot.name
            ) -> None:
                if out.requires_grad:  # a frozen part of the host has no gradient there
                    out.retain_grad()
                captured[name] = out

            handles.append(slot.site.register_forward_hook(hook))
        loader = self.data.train
        x = loader.x[: loader.batch_size].to(self.device)
        y = loader.y[: loader.batch_size].to(self.device)
        try:
            with torch.enable_grad():
                token_loss(self.model(x), y).backward()
        finally:
            for h in handles:
                h.remove()
        self.model.zero_grad(set_to_none=True)
        stats = {}
        for name, act in captured.items():
            grad = act.grad if act.grad is not None else torch.zeros_like(act)
            stats[name] = SiteStats(
                activation_mean=act.detach().mean().item(),
                activation_std=act.detach().std().item() if act.numel() > 1 else 0.0,
                grad_norm=grad.norm().item(),
            )
        return stats

    def contribution(self, slot: SeedSlot, with_seed: SplitMetrics) -> tuple[float, float]:
        """Validation accuracy gained and loss saved by the seed: the grown model minus its
        shadow (the model trained on without the seed) if it has one, else minus itself with
        the seed switched off."""
        if self.shadows is not None and slot.name in self.shadows:
            without = evaluate(self.shadows.model_of(slot.name), self.data.val, self.device)
            return with_seed.accuracy - without.accuracy, without.loss - with_seed.loss
        slot.bypass = True
        try:
            without = evaluate(self.model, self.data.val, self.device)
        finally:
            slot.bypass = False
        return with_seed.accuracy - without.accuracy, without.loss - with_seed.loss

    def observe(
        self, epoch: int, train: SplitMetrics, val: SplitMetrics, val_losses: Sequence[float]
    ) -> Observation:
        stats = self.site_stats()
        steps_per_epoch = max(1, len(self.data.train))
        slots = []
        for slot in self.model.iter_slots():
            acc_gain = loss_saved = None
            if slot.state is SeedState.BLENDING:
                acc_gain, loss_saved = self.contribution(slot, val)
            slots.append(
                SlotObservation(
                    name=slot.name,
                    kind=slot.kind,
                    shape=slot.shape,
                    state=slot.state,
                    blueprint=slot.blueprint,
                    epochs_in_state=slot.epochs_in_state,
                    kernel_ready=slot.kernel_ready,
                    alpha=slot.alpha,
                    verdict_in=-(-slot.steps_to_verdict // steps_per_epoch),
                    embargo_left=slot.embargo_left,
                    stats=stats.get(slot.name),
                    contribution_accuracy=acc_gain,
                    contribution_loss=loss_saved,
                    seed_grad_norm_max=slot.grad_norm_max if slot.seed is not None else None,
                    tried=dict(slot.tried),
                )
            )
        observation = Observation(
            epoch=epoch,
            max_epochs=self.max_epochs,
            train_loss=train.loss,
            train_accuracy=train.accuracy,
            val_loss=val.loss,
            val_accuracy=val.accuracy,
            val_loss_history=tuple(val_losses),
            slots=tuple(slots),
            allowed_blueprints=self.allowed,
        )
        graph = self.model.graph
        if graph is None:
            return observation
        seed_params = {
            s.name: sum(p.numel() for p in s.seed_parameters()) for s in self.model.iter_slots()
        }
        graph.update(observation, seed_params, self.latency_us)
        return observation.model_copy(update={"graph": graph})
