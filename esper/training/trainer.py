"""The training loop (Tolaria) and its control step: observe, decide, apply, publish."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from esper import blueprints as blueprint_registry
from esper.contracts import (
    Adaptation,
    Decision,
    EpochEnded,
    GateRefused,
    KernelFailed,
    KernelLatency,
    KernelLoaded,
    KernelQuarantined,
    KernelRequested,
    KernelSpec,
    Observation,
    SeedState,
    SiteStats,
    SlotObservation,
)
from esper.data import DataSplits, TensorLoader
from esper.events import EventBus
from esper.kernels import KernelLibrary, KernelRequest, LoadedKernel
from esper.kernels.compiler import percentile
from esper.policy import Policy
from esper.seeds import MorphogeneticModel, SeedSlot, merge_into_site, merge_obstacle
from esper.training.flops import flops_per_sample
from esper.training.optim import add_group, group_names, remove_group

S = SeedState


def token_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for [B, C] logits with [B] targets and [B, T, V] logits with [B, T]."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction=reduction)


@dataclass
class Gates:
    """Quality gates: what a seed must show before the trainer lets a transition happen."""

    min_training_steps: int = 0
    max_grad_norm: float = float("inf")
    fossilize_min_contribution: float | None = 0.0


@dataclass
class SeedOptions:
    blend_epochs: int = 3
    lr: float | None = None
    gates: Gates = field(default_factory=Gates)
    merge: bool = False


@dataclass
class PendingKernel:
    request: KernelRequest
    requested_at: float
    due_epoch: int | None
    spec: KernelSpec


@dataclass
class BlueprintOptions:
    allowed: list[str]
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    init_seed: int = 0


@dataclass
class FitResult:
    metrics: dict[str, float]
    history: list[dict[str, float]]
    adaptations: list[dict[str, Any]]
    kernels: list[dict[str, Any]]
    params: dict[str, int]
    flops: dict[str, int]


@dataclass
class SplitMetrics:
    loss: float
    accuracy: float


class Trainer:
    def __init__(
        self,
        model: MorphogeneticModel,
        data: DataSplits,
        policy: Policy,
        library: KernelLibrary,
        bus: EventBus,
        optimizer: Callable[..., torch.optim.Optimizer],
        max_epochs: int,
        seeds: SeedOptions,
        blueprints: BlueprintOptions,
        scheduler: Callable[..., Any] | None = None,
        device: str = "cpu",
        progress: bool = True,
        prewarm: bool = False,
        kernel_wait_epochs: int | None = 1,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.data = data
        self.policy = policy
        self.library = library
        self.bus = bus
        self.max_epochs = max_epochs
        self.seeds = seeds
        self.blueprints = blueprints
        self.progress = progress
        self.prewarm = prewarm
        self.kernel_wait_epochs = kernel_wait_epochs
        self.kernel_blocked_s = 0.0
        self._pending: dict[str, PendingKernel] = {}
        self._active: list[SeedSlot] | None = None
        self.start_epoch = 0
        self.stop_after_epoch: int | None = None
        self.on_epoch_end: Callable[[int], None] | None = None
        self.restored_adaptations: list[dict[str, Any]] = []
        self._contribution: dict[str, float | None] = {}
        self.optimizer = optimizer([{"params": model.host_parameters(), "name": "host"}])
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.kernels: list[dict[str, Any]] = []
        self._kernel_entry: dict[str, dict[str, Any]] = {}
        self.allowed = {
            slot.name: blueprint_registry.compatible(slot.shape, blueprints.allowed)
            for slot in model.iter_slots()
        }
        for slot in model.iter_slots():
            slot.on_transition = self._on_transition

    # -- events ----------------------------------------------------------------------------
    def _on_transition(self, slot: SeedSlot, old: SeedState, new: SeedState, reason: str) -> None:
        self._active = None
        self.bus.publish(
            Adaptation(
                epoch=self.epoch,
                step=self.step,
                slot=slot.name,
                blueprint=slot.blueprint,
                from_state=old,
                to_state=new,
                reason=reason,
            )
        )

    # -- loops -----------------------------------------------------------------------------
    def _batches(self, loader: TensorLoader):  # noqa: ANN202 - generator of device tensors
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_epoch(self) -> SplitMetrics:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        for x, y in self._batches(self.data.train):
            self.optimizer.zero_grad(set_to_none=True)
            logits = self.model(x)
            loss = token_loss(logits, y)
            loss.backward()
            self.step += 1
            active = self._active_slots()
            if active and not self.guard(loss, active):
                continue
            self.optimizer.step()
            for slot in active:
                slot.life.steps_in_state += 1
            loss_sum += loss.detach() * y.numel()
            correct += (logits.detach().argmax(-1) == y).sum()
            seen += y.numel()
        if seen == 0:
            return SplitMetrics(math.nan, math.nan)
        return SplitMetrics(loss_sum.item() / seen, correct.item() / seen)

    def _active_slots(self) -> list[SeedSlot]:
        if self._active is None:
            self._active = [s for s in self.model.iter_slots() if s.in_forward]
        return self._active

    def guard(self, loss: torch.Tensor, active: list[SeedSlot]) -> bool:
        """Let the optimizer step only if the loss and every seed's gradients are finite. A seed
        with a non-finite gradient is culled at once and the step is skipped, so the host never
        takes a non-finite update. Also tracks each seed's largest gradient norm."""
        norms = []
        for slot in active:
            grads = slot.seed_gradients()
            norm = (
                torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                if grads
                else torch.zeros((), device=loss.device)
            )
            life = slot.life
            life.grad_norm_max = (
                norm.detach()
                if isinstance(life.grad_norm_max, float)
                else torch.maximum(life.grad_norm_max, norm.detach())  # type: ignore[arg-type]
            )
            norms.append(norm)
        if bool(torch.isfinite(torch.stack([loss.detach(), *norms])).all()):
            return True
        culprits = [(s, n.item()) for s, n in zip(active, norms) if not bool(torch.isfinite(n))]
        if not culprits:
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at step {self.step} with every seed's gradient "
                "finite: the host itself diverged (lower trainer.optimizer.lr?)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        for slot, norm in culprits:
            self.cull(slot, f"non-finite seed gradient (norm {norm}) at step {self.step}")
        return False

    def cull(self, slot: SeedSlot, reason: str) -> None:
        if f"seed:{slot.name}" in group_names(self.optimizer):
            remove_group(self.optimizer, self.scheduler, f"seed:{slot.name}")
        self._pending.pop(slot.name, None)
        slot.cull(reason)

    def refuse(self, slot: SeedSlot, gate: str, reason: str) -> None:
        self.bus.publish(
            GateRefused(epoch=self.epoch, step=self.step, slot=slot.name, gate=gate, reason=reason)
        )

    @torch.no_grad()
    def evaluate(self, loader: TensorLoader) -> SplitMetrics:
        self.model.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in self._batches(loader):
            logits = self.model(x)
            loss_sum += token_loss(logits, y, reduction="sum").item()
            correct += (logits.argmax(-1) == y).sum().item()
            seen += y.numel()
        return SplitMetrics(loss_sum / seen, correct / seen)

    def site_stats(self) -> dict[str, SiteStats]:
        """Activation and gradient statistics at every site from one training batch."""
        self.model.eval()
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for slot in self.model.iter_slots():

            def hook(module: nn.Module, args: object, out: torch.Tensor, name: str = slot.name):
                out.retain_grad()
                captured[name] = out

            handles.append(slot._site[0].register_forward_hook(hook))
        loader = self.data.train
        x = loader.x[: loader.batch_size].to(self.device)
        y = loader.y[: loader.batch_size].to(self.device)
        try:
            with torch.enable_grad():
                token_loss(self.model(x), y).backward()
        finally:
            for h in handles:
                h.remove()
        self.optimizer.zero_grad(set_to_none=True)
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
        """Validation accuracy gained and loss saved by the seed (seed on minus seed off)."""
        slot.bypass = True
        try:
            without = self.evaluate(self.data.val)
        finally:
            slot.bypass = False
        return with_seed.accuracy - without.accuracy, without.loss - with_seed.loss

    # -- control step ----------------------------------------------------------------------
    def observe(self, train: SplitMetrics, val: SplitMetrics) -> Observation:
        stats = self.site_stats()
        slots = []
        for slot in self.model.iter_slots():
            acc_gain = loss_saved = None
            if slot.state is S.BLENDING:
                acc_gain, loss_saved = self.contribution(slot, val)
            self._contribution[slot.name] = acc_gain
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
                    embargo_left=slot.embargo_left,
                    stats=stats.get(slot.name),
                    contribution_accuracy=acc_gain,
                    contribution_loss=loss_saved,
                    seed_grad_norm_max=slot.grad_norm_max if slot.seed is not None else None,
                    tried=dict(slot.tried),
                )
            )
        return Observation(
            epoch=self.epoch,
            max_epochs=self.max_epochs,
            train_loss=train.loss,
            train_accuracy=train.accuracy,
            val_loss=val.loss,
            val_accuracy=val.accuracy,
            val_loss_history=tuple(h["val/loss"] for h in self.history),
            slots=tuple(slots),
            allowed_blueprints=self.allowed,
        )

    def apply(self, decision: Decision) -> None:
        if decision.action == "wait":
            return
        if decision.slot is None:
            raise ValueError(f"policy decision {decision.action} names no slot")
        slot = self.model.slot(decision.slot)
        if decision.action == "germinate":
            self.germinate(slot, decision)
        elif decision.action == "advance":
            if slot.state is S.GERMINATED:
                slot.start_training(decision.reason)
            else:
                self.advance_to_blending(slot, decision.reason)
        elif decision.action == "fossilize":
            self.fossilize(slot, decision.reason)
        elif decision.action == "cull":
            self.cull(slot, decision.reason)

    def advance_to_blending(self, slot: SeedSlot, reason: str) -> None:
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
            slot.start_blending(self.seeds.blend_epochs * len(self.data.train), reason)

    def fossilize(self, slot: SeedSlot, reason: str) -> None:
        needed = self.seeds.gates.fossilize_min_contribution
        gained = self._contribution.get(slot.name)
        if needed is not None and (gained is None or gained <= needed):
            shown = "unmeasured" if gained is None else f"{gained:+.4f}"
            self.cull(slot, f"gate: val accuracy contribution {shown} <= {needed}")
        elif not self.seeds.merge:
            slot.fossilize(reason)
        else:
            obstacle = merge_obstacle(slot)
            if obstacle is not None:
                slot.fossilize(f"{reason}; not merged ({obstacle}): kept as a trainable seed")
                return
            slot.fossilize(f"{reason}; merged into {slot.name}")
            merge_into_site(slot)
            remove_group(self.optimizer, self.scheduler, f"seed:{slot.name}")

    def kernel_spec(self, blueprint: str, shape: tuple[int, ...]) -> KernelSpec:
        return KernelSpec(
            blueprint=blueprint,
            hparams=blueprint_registry.get(blueprint).hparams(
                self.blueprints.hparams.get(blueprint)
            ),
            input_shape=shape,
            device=self.device.type,
            init_seed=self.blueprints.init_seed,
            torch_version=torch.__version__,
        )

    def germinate(self, slot: SeedSlot, decision: Decision) -> None:
        """Request the kernel and return at once; the slot waits in GERMINATED until it is in."""
        blueprint = decision.blueprint
        if blueprint not in self.allowed[slot.name]:
            raise ValueError(
                f"policy chose blueprint {blueprint!r} for {slot.name}; allowed there: "
                f"{', '.join(self.allowed[slot.name])}"
            )
        slot.germinate(blueprint, decision.reason)
        spec = self.kernel_spec(blueprint, slot.shape)
        request = self.library.request(spec)
        self.bus.publish(
            KernelRequested(
                epoch=self.epoch,
                step=self.step,
                slot=slot.name,
                blueprint=blueprint,
                spec_key=spec.key(),
                ready=request.done(),
            )
        )
        wait = self.kernel_wait_epochs
        due = None if wait is None else self.epoch + wait
        self._pending[slot.name] = PendingKernel(request, time.perf_counter(), due, spec)
        self.collect_kernels()

    def collect_kernels(self) -> None:
        """Attach kernels that are due; cull a seed whose kernel failed, with the error.

        With `kernel_wait_epochs=k` a kernel is attached exactly k control steps after
        germination, waiting for the compile only if it is still running then: training
        overlaps the compile and the run does not depend on how fast it was. With None a
        kernel is attached whenever it is ready (more overlap, not reproducible).
        """
        for name, pending in list(self._pending.items()):
            if pending.due_epoch is None:
                if not pending.request.done():
                    continue
            elif self.epoch < pending.due_epoch:
                continue
            elif not pending.request.done():
                started = time.perf_counter()
                pending.request.wait()
                self.kernel_blocked_s += time.perf_counter() - started
            del self._pending[name]
            slot = self.model.slot(name)
            try:
                loaded = pending.request.result()
            except Exception as exc:  # noqa: BLE001 - recorded as the cull's reason
                error = f"{type(exc).__name__}: {exc}"
                self.bus.publish(
                    KernelFailed(
                        epoch=self.epoch,
                        step=self.step,
                        slot=name,
                        blueprint=slot.blueprint or "",
                        error=error,
                    )
                )
                self.cull(slot, f"kernel failed: {error}")
                continue
            self.attach(slot, loaded, time.perf_counter() - pending.requested_at)
        self.library.finish_ready()
        for notice in self.library.drain_quarantines():
            self.bus.publish(
                KernelQuarantined(
                    epoch=self.epoch,
                    step=self.step,
                    kernel_id=notice.kernel_id,
                    location=notice.location,
                    error=notice.error,
                )
            )

    def attach(self, slot: SeedSlot, loaded: LoadedKernel, wait_s: float) -> None:
        slot.attach(loaded.module.to(self.device), loaded.metadata.kernel_id)
        add_group(
            self.optimizer,
            self.scheduler,
            f"seed:{slot.name}",
            slot.seed_parameters(),
            self.seeds.lr,
        )
        meta = loaded.metadata
        self.bus.publish(
            KernelLoaded(
                epoch=self.epoch,
                step=self.step,
                slot=slot.name,
                kernel_id=meta.kernel_id,
                blueprint=meta.spec.blueprint,
                cache=loaded.cache,
                source=loaded.source,
                wait_s=wait_s,
                compile_s=meta.compile_s,
                latency_us_p50=meta.latency_us_p50,
                latency_us_p95=meta.latency_us_p95,
            )
        )
        entry = {
            "slot": slot.name,
            "epoch": self.epoch,
            "kernel_id": meta.kernel_id,
            "blueprint": meta.spec.blueprint,
            "params": meta.param_count,
            "latency_us_p50": meta.latency_us_p50,
            "latency_us_p95": meta.latency_us_p95,
            "latency_batch": meta.latency_batch,
            "characterisation": [p.model_dump() for p in meta.characterisation],
            "compile_s": meta.compile_s,
            "wait_s": wait_s,
            "cache": loaded.cache,
            "source": loaded.source,
            "train_latency_us_p50": None,
            "train_latency_us_p95": None,
            "train_latency_samples": 0,
        }
        self.kernels.append(entry)
        self._kernel_entry[slot.name] = entry

    def start_prewarm(self) -> None:
        """Request every offered blueprint at every slot shape, so germinations find them ready."""
        seen: set[str] = set()
        for slot in self.model.iter_slots():
            for blueprint in self.allowed[slot.name]:
                spec = self.kernel_spec(blueprint, slot.shape)
                if spec.key() in seen:
                    continue
                seen.add(spec.key())
                request = self.library.request(spec)
                self.bus.publish(
                    KernelRequested(
                        slot="prewarm",
                        blueprint=blueprint,
                        spec_key=spec.key(),
                        ready=request.done(),
                    )
                )

    def publish_latencies(self) -> None:
        for slot in self.model.iter_slots():
            entry = self._kernel_entry.get(slot.name)
            samples = slot.collect_latencies()
            if not samples or entry is None or slot.kernel_id is None:
                continue
            p50, p95 = percentile(samples, 50), percentile(samples, 95)
            entry.update(
                train_latency_us_p50=p50,
                train_latency_us_p95=p95,
                train_latency_samples=len(samples),
            )
            self.bus.publish(
                KernelLatency(
                    epoch=self.epoch,
                    step=self.step,
                    slot=slot.name,
                    kernel_id=slot.kernel_id,
                    samples=len(samples),
                    latency_us_p50=p50,
                    latency_us_p95=p95,
                )
            )

    def control_step(self, train: SplitMetrics, val: SplitMetrics) -> list[Decision]:
        for slot in self.model.iter_slots():
            slot.tick()
        self.collect_kernels()
        self.publish_latencies()
        decisions = self.policy.decide(self.observe(train, val))
        for decision in decisions:
            self.apply(decision)
        return decisions

    # -- the run ---------------------------------------------------------------------------
    def params(self) -> dict[str, int]:
        host = sum(p.numel() for p in self.model.host_parameters())
        seeds = self.model.seed_parameter_count()
        return {"host": host, "seeds": seeds, "total": host + seeds}

    def cache_metrics(self) -> dict[str, float]:
        stats, counts = self.library.cache.stats, self.library.counts
        return {
            "kernel_cache/hits": float(stats.hits),
            "kernel_cache/misses": float(stats.misses),
            "kernel_cache/evictions": float(stats.evictions),
            "kernel_cache/bytes": float(stats.bytes),
            "kernel_library/store_loads": float(counts.store_loads),
            "kernel_library/compiles": float(counts.compiles),
            "kernel_library/quarantined": float(len(counts.quarantined)),
        }

    def fit(self) -> FitResult:
        from tqdm import tqdm

        if getattr(self.policy, "may_germinate", True):
            self.library.start_worker()
        if self.prewarm:
            self.start_prewarm()
        bar = tqdm(
            range(self.start_epoch, self.max_epochs),
            initial=self.start_epoch,
            total=self.max_epochs,
            desc="epochs",
            disable=not self.progress,
            dynamic_ncols=True,
            leave=False,
        )
        for epoch in bar:
            self.epoch = epoch
            started = time.perf_counter()
            train = self.train_epoch()
            val = self.evaluate(self.data.val)
            if self.scheduler is not None:
                self.scheduler.step()
            row = {
                "epoch": float(epoch),
                "train/loss": train.loss,
                "train/accuracy": train.accuracy,
                "val/loss": val.loss,
                "val/accuracy": val.accuracy,
            }
            self.history.append(row)
            self.control_step(train, val)
            params = self.params()
            row.update(
                {
                    "params/seeds": float(params["seeds"]),
                    "params/total": float(params["total"]),
                    "seeds/active": float(
                        sum(s.state is not S.DORMANT for s in self.model.iter_slots())
                    ),
                    "epoch_s": time.perf_counter() - started,
                    **self.cache_metrics(),
                }
            )
            self.bus.publish(EpochEnded(epoch=epoch, step=self.step, metrics=row))
            self.bus.flush()
            bar.set_postfix(
                loss=f"{train.loss:.3f}", val_acc=f"{val.accuracy:.3f}", params=params["total"]
            )
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch)
            if self.stop_after_epoch is not None and epoch >= self.stop_after_epoch:
                break
        bar.close()
        test = self.evaluate(self.data.test)
        last = self.history[-1] if self.history else {}
        metrics = {
            "train_loss": last.get("train/loss", math.nan),
            "train_accuracy": last.get("train/accuracy", math.nan),
            "val_loss": last.get("val/loss", math.nan),
            "val_accuracy": last.get("val/accuracy", math.nan),
            "test_loss": test.loss,
            "test_accuracy": test.accuracy,
        }
        adaptations = self.adaptations()
        flops = flops_per_sample(self.model, self.data.test.x[:1].to(self.device))
        return FitResult(metrics, self.history, adaptations, self.kernels, self.params(), flops)

    def adaptations(self) -> list[dict[str, Any]]:
        """Every transition of the run so far, a resumed run's earlier ones included."""
        return self.restored_adaptations + [
            {
                "epoch": e.epoch,
                "step": e.step,
                "slot": e.slot,
                "blueprint": e.blueprint,
                "from": e.from_state.value,
                "to": e.to_state.value,
                "reason": e.reason,
            }
            for e in self.bus.of_kind("adaptation")  # type: ignore[attr-defined]
        ]

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one is."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "slots": {s.name: s.snapshot() for s in self.model.iter_slots()},
            "pending": {
                name: {"spec": p.spec.model_dump(mode="json"), "due_epoch": p.due_epoch}
                for name, p in self._pending.items()
            },
            "optimizer_groups": [g.get("name") for g in self.optimizer.param_groups],
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "policy": self.policy.state_dict(),
            "history": self.history,
            "kernels": self.kernels,
            "contribution": self._contribution,
            "kernel_blocked_s": self.kernel_blocked_s,
            "adaptations": self.adaptations(),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "train_loader": self.data.train.generator.get_state(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for slot in self.model.iter_slots():
            snap = state["slots"][slot.name]
            module = None
            if snap["kernel_id"] is not None:
                spec = self.kernel_spec(snap["blueprint"], slot.shape)
                loaded = self.library.get(spec)
                if loaded.metadata.kernel_id != snap["kernel_id"]:
                    raise RuntimeError(
                        f"slot {slot.name}: checkpoint used kernel {snap['kernel_id'][:16]}, the "
                        f"library now gives {loaded.metadata.kernel_id[:16]} for the same spec"
                    )
                module = loaded.module.to(self.device)
            slot.restore(snap, module)
        self._active = None
        for group_name in state["optimizer_groups"][1:]:
            slot = self.model.slot(group_name.removeprefix("seed:"))
            add_group(
                self.optimizer, self.scheduler, group_name, slot.seed_parameters(), self.seeds.lr
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.policy.load_state_dict(state["policy"])
        for name, pending in state["pending"].items():
            spec = KernelSpec.model_validate(pending["spec"])
            self._pending[name] = PendingKernel(
                self.library.request(spec), time.perf_counter(), pending["due_epoch"], spec
            )
        self.history = list(state["history"])
        self.kernels = list(state["kernels"])
        self._kernel_entry = {k["slot"]: k for k in self.kernels}
        self._contribution = dict(state["contribution"])
        self.kernel_blocked_s = state["kernel_blocked_s"]
        self.restored_adaptations = list(state["adaptations"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.start_epoch = state["epoch"] + 1
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.data.train.generator.set_state(rng["train_loader"])
