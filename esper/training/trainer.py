"""The training loop (Tolaria): epochs of optimizer steps, a control step after each epoch.

Read it top to bottom: `fit()` is the run, `train_epoch()` one pass over the training split with
the non-finite guard; the parts it calls each live in a file of their own (steps, control,
attachment, observation, checkpoint, record).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from esper import blueprints as blueprint_registry
from esper.config import BlueprintsConfig, KernelsConfig, SeedsConfig, TrainerConfig
from esper.contracts import EpochEnded, SeedState
from esper.data import DataSplits
from esper.events import EventBus
from esper.events.schema import STATE_CODES
from esper.kernels import KernelLibrary
from esper.kernels.claims import WaitInterrupted
from esper.policy import Policy
from esper.seeds import MorphogeneticModel, SeedSlot
from esper.training import checkpoint
from esper.training.attachment import KernelAttachment
from esper.training.control import ControlStep
from esper.training.distributed import Ranks
from esper.training.flops import flops_per_sample, train_step_flops
from esper.training.guard import StepGuard, check_weights
from esper.training.interruption import Interrupted, Interruption
from esper.training.observation import Observer
from esper.training.optim import Optimization, step_scheduler
from esper.training.progress import epoch_bar, postfix
from esper.training.record import RunRecorder
from esper.training.shadow import Shadows
from esper.training.steps import Clock, SplitMetrics, device_batches, evaluate, token_loss


@dataclass(frozen=True)
class FitResult:
    """Final metrics (test read once, here) and what the grown model costs."""

    metrics: dict[str, float]
    params: dict[str, int]
    flops: dict[str, int]


class Trainer:
    """Trains a wrapped model and lets a policy grow it; everything it uses is built here.

    Args:
        model: the host wrapped with its seed slots (`esper.wrap`).
        data: train/val/test loaders; decisions see train and val only.
        policy: decides at each control step.
        library: where seeds' kernels come from.
        bus: every event goes here; the recorder is one of its sinks.
        recorder: the sink that keeps the run record's adaptations and kernels.
        optimizer: a factory taking parameter groups (Hydra `_partial_`).
        scheduler: a factory taking the optimizer, or None.
        trainer, seeds, blueprints, kernels: the validated config sections.
        checkpoint_extra: plain values saved with every checkpoint (config, W&B run id);
            None writes no checkpoints.
        checkpoint_to: where the checkpoint goes (`<run dir>/checkpoints/last.pt`).
    """

    def __init__(
        self,
        model: MorphogeneticModel,
        data: DataSplits,
        policy: Policy,
        library: KernelLibrary,
        bus: EventBus,
        recorder: RunRecorder,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None,
        trainer: TrainerConfig,
        seeds: SeedsConfig,
        blueprints: BlueprintsConfig,
        kernels: KernelsConfig,
        checkpoint_to: Path | None = None,
        checkpoint_extra: dict[str, Any] | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        self.device = torch.device(trainer.device)
        self.model = model.to(self.device)
        self.data = data
        self.policy = policy
        self.library = library
        self.bus = bus
        self.recorder = recorder
        self.max_epochs = trainer.max_epochs
        self.stop_after_epoch = trainer.stop_after_epoch
        # ddp: rank 0 draws the bar
        self.progress = trainer.progress and not trainer.quiet and (ranks is None or ranks.writer)
        self.prewarm = kernels.prewarm
        self.checkpoint_to = checkpoint_to
        self.checkpoint_extra = checkpoint_extra or {}
        self.clock = Clock()
        self.ranks = ranks or Ranks()
        self.start_epoch = 0
        self.val_losses: list[float] = []
        self.last: dict[str, float] = {}
        built = optimizer([{"params": model.host_parameters(), "name": "host"}])
        self.optimization = Optimization(
            built, scheduler(built) if scheduler is not None else None, seeds.lr
        )
        self.allowed = {
            slot.name: blueprint_registry.compatible(slot.shape, blueprints.allowed)
            for slot in model.iter_slots()
        }
        self.kernels = KernelAttachment(
            model,
            library,
            bus,
            self.clock,
            self.device,
            blueprints,
            kernels.wait_epochs,
            follower=not self.ranks.writer,
        )
        self.shadows: Shadows | None = None
        if seeds.contribution == "shadow":  # single-process: RunConfig refuses it with ddp
            example = (data.train.x[:1].to(self.device), data.train.y[:1].to(self.device))
            self.shadows = Shadows(model, self.optimization.optimizer, example)
        self.control = ControlStep(
            model,
            policy,
            Observer(
                model,
                data,
                self.device,
                self.allowed,
                trainer.max_epochs,
                self.kernels.latency_us,
                self.shadows,
            ),
            self.kernels,
            self.optimization,
            bus,
            self.clock,
            seeds,
            steps_per_epoch=len(data.train),
            ranks=self.ranks,
            shadows=self.shadows,
        )
        self._active: list[SeedSlot] = []
        self._active_version = -1
        self._host_params = model.host_parameters()
        self.guard = StepGuard(trainer.max_nonfinite_steps)
        self.interruption = Interruption()
        self.train_flops = 0
        """Forward + backward FLOPs of every training step so far, counted (not estimated)."""
        self._flops_version = -1
        self._flops_per_sample = 0

    @property
    def skipped_steps(self) -> int:
        """Optimizer steps skipped so far because the loss or a gradient was non-finite."""
        return self.guard.skipped_steps

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimization.optimizer

    # -- the run ---------------------------------------------------------------------------
    def fit(self) -> FitResult:
        writer = self.ranks.writer  # ddp: only rank 0 compiles
        if writer and self.policy.may_germinate and self.kernels.any_missing(self.allowed):
            self.library.start_worker()  # warm before the first compile, not during it
        if self.prewarm and writer:
            self.kernels.prewarm(self.allowed)
        self.library.stop_requested = lambda: self.interruption.signum is not None
        with epoch_bar(self.progress, self.start_epoch, self.max_epochs) as bar:
            for epoch in bar:
                try:
                    train, val = self.run_epoch(epoch)
                except WaitInterrupted:
                    raise self._interrupted(epoch) from None
                bar.set_postfix_str(postfix(train, val, self.model.iter_slots()), refresh=False)
                if self.stop_after_epoch is not None and epoch >= self.stop_after_epoch:
                    break
        return self.result(evaluate(self.model, self.data.test, self.device))

    def _interrupted(self, epoch: int) -> Interrupted:
        signum = self.interruption.signum
        assert signum is not None
        saved = self.checkpoint_to is not None and self.checkpoint_to.exists()
        return Interrupted(signum, epoch, self.clock.step, checkpointed=saved)

    def run_epoch(self, epoch: int) -> tuple[SplitMetrics, SplitMetrics]:
        """Train one epoch, evaluate, take the control step, publish, checkpoint."""
        self.clock.epoch = epoch
        started = time.perf_counter()
        flops_per_sample = self.train_flops_per_sample()
        if self.shadows is not None:  # the counterfactuals' training is the run's cost too
            flops_per_sample += self.shadows.flops_per_sample()
        train = self.train_epoch()
        self.train_flops += flops_per_sample * len(self.data.train.x)
        if self.interruption.signum is not None:
            raise self._interrupted(epoch)
        val = evaluate(self.model, self.data.val, self.device)
        if self.optimization.scheduler is not None:
            step_scheduler(self.optimization.scheduler, val.loss)
        self.val_losses.append(val.loss)
        self.control(train, val, self.val_losses)
        self.last = {
            "train/loss": train.loss,
            "train/accuracy": train.accuracy,
            "val/loss": val.loss,
            "val/accuracy": val.accuracy,
        }
        row = self.epoch_row(time.perf_counter() - started)
        self.bus.publish(EpochEnded(epoch=epoch, step=self.clock.step, metrics=row))
        if self.checkpoint_to is not None:
            check_weights(self.model, epoch, self.checkpoint_to.is_file())
        self._write_epoch()
        return train, val

    def _write_epoch(self) -> None:
        """Rank 0 writes the epoch's events and checkpoint; under ddp every rank learns whether
        it could (`Ranks.from_rank_zero`)."""

        def write() -> None:
            self.bus.flush()
            if self.checkpoint_to is not None:
                checkpoint.save({**self.state_dict(), **self.checkpoint_extra}, self.checkpoint_to)

        if not self.ranks.writer:
            self.bus.flush()  # its console and recorder: nothing to write
        self.ranks.from_rank_zero(write)

    def train_flops_per_sample(self) -> int:
        """Forward + backward FLOPs of one training sample, counted again only after the
        morphology changed (a seed joined or left the forward pass)."""
        if self._flops_version != self.control.version:
            loader = self.data.train
            x, y = loader.x[:1].to(self.device), loader.y[:1].to(self.device)
            self._flops_per_sample = train_step_flops(self.model, x, y)
            self._flops_version = self.control.version
        return self._flops_per_sample

    def epoch_row(self, epoch_s: float) -> dict[str, float]:
        """What an epoch_ended event carries: the keys of `esper.events.schema` logged each
        epoch (metrics, sizes, FLOPs, every slot's state and alpha, counters)."""
        params = self.params()
        slots = list(self.model.iter_slots())
        row = {
            "epoch": float(self.clock.epoch),
            **self.last,
            "params/host": float(params["host"]),
            "params/seeds": float(params["seeds"]),
            "params/total": float(params["total"]),
            "seeds/active": float(sum(s.state is not SeedState.DORMANT for s in slots)),
            "train/skipped_steps": float(self.guard.skipped_steps),
            "flops/train_per_sample": float(self._flops_per_sample),
            "flops/train_total": float(self.train_flops),
            "epoch_s": epoch_s,
            **self.library.metrics(),
        }
        for slot in slots:
            row[f"seeds/{slot.name}/state"] = float(STATE_CODES[slot.state])
            row[f"seeds/{slot.name}/alpha"] = float(slot.alpha)
        return row

    def result(self, test: SplitMetrics | None) -> FitResult:
        """The last whole epoch's train/val metrics, test if it was read, and the model's cost."""
        metrics = {
            f"{split}_{name}": self.last.get(f"{split}/{name}", math.nan)
            for split in ("train", "val")
            for name in ("loss", "accuracy")
        }
        if test is not None:
            metrics.update(test_loss=test.loss, test_accuracy=test.accuracy)
        flops = flops_per_sample(self.model, self.data.test.x[:1].to(self.device))
        return FitResult(metrics, self.params(), flops)

    def train_epoch(self) -> SplitMetrics:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        for batch in device_batches(self.data.train, self.device):
            x, y = self.ranks.shard(*batch)
            self.optimizer.zero_grad(set_to_none=True)
            logits: torch.Tensor | None = None
            if len(y):
                logits = self.model(x)
                loss = token_loss(logits, y)
                loss.backward()
            else:  # ddp: a last batch smaller than the ranks leaves this one nothing
                loss = torch.zeros((), device=self.device)
            # ddp: the whole batch's gradient and loss on every rank (one all-reduce), and
            # the stop the ranks agree on
            step_loss, stop = self.ranks.reduce_step(
                loss, y.numel(), self.model.parameters(), self.interruption.signum
            )
            self.clock.step += 1
            active = self.active_slots()
            if self.guard.check(
                step_loss, active, self._host_params, self.optimizer, self.control.cull, self.clock
            ):
                self.optimizer.step()
                for slot in active:
                    slot.life.steps_in_state += 1
                if logits is not None:
                    loss_sum += loss.detach() * y.numel()
                    correct += (logits.detach().argmax(-1) == y).sum()
                    seen += y.numel()
            if self.shadows is not None:
                self.shadows.step(x, y)
            if stop is not None:
                self.interruption.adopt(stop)  # under ddp, maybe another rank's
                break  # the step is done; the loop raises Interrupted
        (total_loss, total_correct, total_seen), stop = self.ranks.sum(
            [loss_sum.item(), float(correct.item()), float(seen)], self.interruption.signum
        )
        if stop is not None:
            self.interruption.adopt(stop)
        if total_seen == 0:
            return SplitMetrics(math.nan, math.nan)
        return SplitMetrics(total_loss / total_seen, total_correct / total_seen)

    def active_slots(self) -> list[SeedSlot]:
        """Slots whose seed is in the forward pass, recomputed only after a transition."""
        if self._active_version != self.control.version:
            self._active = [s for s in self.model.iter_slots() if s.in_forward]
            self._active_version = self.control.version
        return self._active

    def params(self) -> dict[str, int]:
        return self.model.param_counts()

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one is."""
        return {
            "epoch": self.clock.epoch,
            "step": self.clock.step,
            "model": self.model.state_dict(),
            "slots": {s.name: s.snapshot() for s in self.model.iter_slots()},
            "optimization": self.optimization.state_dict(),
            "control": self.control.state_dict(),
            "shadows": self.shadows.state_dict() if self.shadows is not None else {},
            "record": self.recorder.state_dict(),
            "loop": {
                "val_losses": list(self.val_losses),
                "last": dict(self.last),
                "skipped_steps": self.guard.skipped_steps,
                "nonfinite_in_a_row": self.guard.nonfinite_in_a_row,
                "train_flops": self.train_flops,
            },
            "rng": checkpoint.rng_state(self.data.train.generator),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.restore_slots(state["slots"], self.kernels.module_for)
        self.control.version += 1
        checkpoint.load_weights(self.model, state["model"])  # first: names what differs
        seed_params = {s.name: s.seed_parameters() for s in self.model.iter_slots()}
        self.optimization.load_state_dict(state["optimization"], seed_params)
        if self.shadows is not None:
            self.shadows.load_state_dict(state.get("shadows", {}))
        self.control.load_state_dict(state["control"])
        self.recorder.load_state_dict(state["record"])
        self.val_losses = list(state["loop"]["val_losses"])
        self.last = dict(state["loop"]["last"])
        self.guard.skipped_steps = state["loop"]["skipped_steps"]
        self.guard.nonfinite_in_a_row = state["loop"]["nonfinite_in_a_row"]
        self.train_flops = state["loop"]["train_flops"]
        self.clock.epoch, self.clock.step = state["epoch"], state["step"]
        self.start_epoch = state["epoch"] + 1
        checkpoint.restore_rng(state["rng"], self.data.train.generator)
