"""The control step: observe, let the policy decide, and apply its decisions through the quality
gates into the slots. Every decision and every transition is published as an event."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from esper.config import SeedsConfig
from esper.contracts import (
    Adaptation,
    Decision,
    DecisionMade,
    GateRefused,
    KernelFailed,
    SeedState,
)
from esper.events import EventBus
from esper.policy import Policy
from esper.policy.contract import PolicyError, checked_decisions, checked_state, illegal, legal
from esper.seeds import MorphogeneticModel, SeedSlot, merge_into_site, merge_obstacle
from esper.training.attachment import Collected, KernelAttachment
from esper.training.distributed import Ranks
from esper.training.observation import Observer
from esper.training.optim import Optimization
from esper.training.shadow import Shadows
from esper.training.steps import Clock, SplitMetrics

S = SeedState


class ControlStep:
    """Applies a policy's decisions to one model; owns the gates and the seeds' optimizer groups.

    `version` counts transitions, so the loop can cache the set of slots in the forward pass.
    """

    def __init__(
        self,
        model: MorphogeneticModel,
        policy: Policy,
        observer: Observer,
        kernels: KernelAttachment,
        optimization: Optimization,
        bus: EventBus,
        clock: Clock,
        seeds: SeedsConfig,
        steps_per_epoch: int,
        ranks: Ranks | None = None,
        shadows: Shadows | None = None,
    ) -> None:
        self.model = model
        self.shadows = shadows
        """`seeds.contribution=shadow`: each blending seed's counterfactual (else None)."""
        self.policy = policy
        self.observer = observer
        self.kernels = kernels
        self.optimization = optimization
        self.bus = bus
        self.clock = clock
        self.seeds = seeds
        self.steps_per_epoch = steps_per_epoch
        self.ranks = ranks or Ranks()
        self.version = 0
        self.contribution: dict[str, float | None] = {}
        self.val_accuracy: float | None = None
        """The val accuracy the current control step sees (recorded with its transitions)."""
        for slot in model.iter_slots():
            slot.on_transition = self._on_transition

    def _on_transition(self, slot: SeedSlot, old: SeedState, new: SeedState, reason: str) -> None:
        self.version += 1
        self.bus.publish(
            Adaptation(
                epoch=self.clock.epoch,
                step=self.clock.step,
                slot=slot.name,
                blueprint=slot.blueprint,
                from_state=old,
                to_state=new,
                reason=reason,
                params=sum(p.numel() for p in slot.seed_parameters()),
                val_accuracy=self.val_accuracy,
            )
        )

    def __call__(
        self, train: SplitMetrics, val: SplitMetrics, val_losses: Sequence[float]
    ) -> list[Decision]:
        """One control step at the end of an epoch."""
        self.val_accuracy = val.accuracy
        for slot in self.model.iter_slots():
            slot.tick()
        self.settle_kernels()
        self.kernels.publish_latencies()
        observation = self.observer.observe(self.clock.epoch, train, val, val_losses)
        self.contribution = {s.name: s.contribution_accuracy for s in observation.slots}
        # ddp: rank 0's policy decides; every rank applies the same decisions in this step
        decisions = self.ranks.from_rank_zero(
            lambda: checked_decisions(self.policy, self.policy.decide(observation), observation)
        )
        self.bus.publish(
            DecisionMade(
                epoch=self.clock.epoch,
                step=self.clock.step,
                policy=self.policy.name,
                observation=observation,
                decisions=decisions,
            )
        )
        for decision in decisions:
            self.apply(decision)
        return decisions

    def settle_kernels(self) -> None:
        """Attach due kernels (their seeds join the optimizer); cull seeds whose kernel failed."""
        collected = Collected()

        def collect() -> list[tuple[str, str | None, str | None]]:
            nonlocal collected
            collected = self.kernels.collect()
            return self.kernels.outcome(collected)

        outcome = self.ranks.from_rank_zero(collect)  # a store rank 0 cannot write: every rank
        if not self.ranks.writer:  # ddp follower: the same kernels come from the store
            collected = self.kernels.mirror(outcome)
        for slot in collected.attached:
            self.optimization.add_seed(slot.name, slot.seed_parameters())
        for failure in collected.failed:
            self.bus.publish(
                KernelFailed(
                    epoch=self.clock.epoch,
                    step=self.clock.step,
                    slot=failure.slot.name,
                    blueprint=failure.slot.blueprint or "",
                    error=failure.error,
                )
            )
            self.cull(failure.slot, f"kernel failed: {failure.error}")

    # -- decisions -------------------------------------------------------------------------
    def apply(self, decision: Decision) -> None:
        if decision.action == "wait":
            return
        slot = self.model.slot(str(decision.slot))  # one of the model's (checked_decisions)
        if not legal(decision.action, slot.state, slot.kernel_ready):
            raise illegal(self.policy, decision, slot.state, slot.kernel_ready)
        if decision.action == "germinate":
            self.germinate(slot, decision)
        elif decision.action == "advance":
            if slot.state is S.GERMINATED:
                slot.start_training(decision.reason)
            else:
                self.start_blending(slot, decision.reason)
        elif decision.action == "fossilize":
            self.fossilize(slot, decision.reason)
        elif decision.action == "cull":
            self.cull(slot, decision.reason)

    def germinate(self, slot: SeedSlot, decision: Decision) -> None:
        """Request the kernel and return at once; the slot waits in GERMINATED until it is in."""
        blueprint = decision.blueprint
        allowed = self.observer.allowed[slot.name]
        if blueprint is None or blueprint not in allowed:
            raise PolicyError(
                f"policy {self.policy.name!r} chose blueprint {blueprint!r} for {slot.name}; "
                f"allowed there: {', '.join(allowed)}"
            )
        slot.germinate(blueprint, decision.reason)
        self.kernels.request(slot, blueprint)
        self.settle_kernels()

    def start_blending(self, slot: SeedSlot, reason: str) -> None:
        gates = self.seeds.gates
        grad_max = slot.grad_norm_max
        if not math.isfinite(grad_max) or grad_max > gates.max_grad_norm:
            self.cull(
                slot,
                f"gate: exploding seed gradient, max norm {grad_max:.3g} > {gates.max_grad_norm:g}",
            )
        elif slot.steps_in_state < gates.min_training_steps:
            self.refuse(
                slot,
                "min_training_steps",
                f"{slot.steps_in_state} of {gates.min_training_steps} training steps",
            )
        else:
            slot.start_blending(
                self.seeds.blend_epochs * self.steps_per_epoch,
                reason,
                probation_steps=self.seeds.probation_epochs * self.steps_per_epoch,
            )
            if self.shadows is not None:
                self.shadows.start(slot)

    def fossilize(self, slot: SeedSlot, reason: str) -> None:
        needed = self.seeds.gates.fossilize_min_contribution
        gained = self.contribution.get(slot.name)
        if needed is not None and (gained is None or gained <= needed):
            shown = "unmeasured" if gained is None else f"{gained:+.4f}"
            self.cull(slot, f"gate: val accuracy contribution {shown} <= {needed}")
            return
        if self.shadows is not None:
            self.shadows.drop(slot.name)  # kept: its counterfactual is no longer needed
        if self.seeds.fossilized != "merge":
            slot.fossilize(reason)
        else:
            obstacle = merge_obstacle(slot)
            if obstacle is not None:
                slot.fossilize(f"{reason}; not merged ({obstacle}): kept as a trainable seed")
                return
            slot.fossilize(f"{reason}; merged into {slot.name}")
            merge_into_site(slot)
            self.optimization.remove_seed(slot.name)

    def cull(self, slot: SeedSlot, reason: str) -> None:
        self.optimization.remove_seed(slot.name)
        self.kernels.forget(slot.name)
        if self.shadows is not None and slot.name in self.shadows:
            reason = f"{reason}; model restored from its shadow"
        slot.cull(reason)
        if self.shadows is not None:
            self.shadows.restore(slot.name)

    def refuse(self, slot: SeedSlot, gate: str, reason: str) -> None:
        self.bus.publish(
            GateRefused(
                epoch=self.clock.epoch,
                step=self.clock.step,
                slot=slot.name,
                gate=gate,
                reason=reason,
            )
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "contribution": dict(self.contribution),
            "policy": checked_state(self.policy),
            "kernels": self.kernels.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.contribution = dict(state["contribution"])
        self.policy.load_state_dict(state["policy"])
        self.kernels.load_state_dict(state["kernels"])
