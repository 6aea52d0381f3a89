"""An experiment is one run: fit, then write summary.json and close every sink, even on failure."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esper.atomic import WriteError, write_atomic
from esper.contracts import (
    KernelLibraryRecord,
    RanksRecord,
    RunEnded,
    RunRecord,
    RunStarted,
    RunStatus,
    SlotRecord,
)
from esper.events import EventBus, WandbSink
from esper.training.distributed import parameter_digest
from esper.training.guard import Diverged
from esper.training.interruption import Interrupted
from esper.training.trainer import FitResult, Trainer


@dataclass
class Identity:
    """What names a run in its record: config choices, hash, seed, where it resumed from."""

    choices: dict[str, str]
    allowed_blueprints: list[str]
    sites: list[str]
    config_hash: str
    seed: int
    resumed_from: str | None = None


@dataclass
class Experiment:
    trainer: Trainer
    bus: EventBus
    run_dir: Path
    config: dict[str, Any]
    identity: Identity
    wandb: dict[str, Any] = field(default_factory=lambda: {"mode": "disabled", "run_dir": None})
    started: float = field(default_factory=time.perf_counter)
    interrupted_by: int | None = None
    """The signal that interrupted the run, if one did (run.py exits with 128 + it)."""
    summary_unwritten: str | None = None
    """Why summary.json could not be written (a full disk, a read-only directory), if it could
    not: run.py says it beside the run's outcome, which stays the outcome."""

    def record(self, status: RunStatus, result: FitResult | None, error: str | None) -> RunRecord:
        trainer = self.trainer
        library = trainer.library
        counts, cache = library.counts, library.cache.stats
        recorder = trainer.recorder
        who = self.identity
        return RunRecord(
            status=status,
            error=error,
            choices=who.choices,
            allowed_blueprints=who.allowed_blueprints,
            sites=who.sites,
            config_hash=who.config_hash,
            seed=who.seed,
            policy=trainer.policy.describe(),
            metrics=result.metrics if result else {},
            split_sizes=trainer.data.sizes(),
            params=result.params if result else trainer.params(),
            flops_per_sample=result.flops if result else {},
            train_flops=trainer.train_flops,
            adaptations=recorder.adaptations,
            kernels=recorder.kernels,
            kernel_library=KernelLibraryRecord(
                store=library.store.describe(),
                cache_hits=cache.hits,
                cache_misses=cache.misses,
                cache_evictions=cache.evictions,
                cache_bytes=cache.bytes,
                store_loads=counts.store_loads,
                compiles=counts.compiles,
                claim_waits=counts.claim_waits,
                compile_failures=counts.compile_failures,
                blocked_on_compile_s=trainer.kernels.blocked_s,
                quarantined=counts.quarantined,
                compile_mode="worker" if library.async_compile else "inline",
                fallback=library.fallback,
            ),
            quarantined=recorder.quarantined,
            final_slots={
                s.name: SlotRecord(state=s.state, blueprint=s.blueprint)
                for s in trainer.model.iter_slots()
            },
            epochs=recorder.epochs,
            skipped_steps=trainer.skipped_steps,
            resumed_from=who.resumed_from,
            checkpoint=(  # none where the first one could not be written
                str(trainer.checkpoint_to)
                if trainer.checkpoint_to and trainer.checkpoint_to.is_file()
                else None
            ),
            wandb=self.wandb,
            wall_s=time.perf_counter() - self.started,
        )

    def run(self) -> RunRecord:
        self.bus.publish(RunStarted(config=self.config, resumed_from=self.identity.resumed_from))
        self.trainer.ranks.from_rank_zero(self.bus.flush)  # ddp: events.jsonl is rank 0's
        if self.identity.resumed_from is not None:
            previous = Path(self.identity.resumed_from).parent.parent
            wandb_sink = self.bus.find(WandbSink)
            if wandb_sink is not None:
                wandb_sink.catch_up(previous, upto_epoch=self.trainer.start_epoch - 1)
        try:
            with self.trainer.interruption:
                result = self.trainer.fit()
        except Interrupted as exc:
            self.interrupted_by = exc.signum
            return self._end("interrupted", self.trainer.result(test=None), str(exc))
        except Diverged as exc:
            self._end("diverged", None, str(exc))
            raise
        except BaseException as exc:
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._end("failed", None, error)
            raise
        stopped = self.trainer.recorder.epochs < self.trainer.max_epochs
        return self._end("stopped" if stopped else "completed", result, None)

    def discard(self) -> RunRecord:
        """Close what build() opened (compile worker, events file, W&B run) without training:
        the record says `stopped` after 0 epochs."""
        return self._end("stopped", None, None)

    def _end(self, status: RunStatus, result: FitResult | None, error: str | None) -> RunRecord:
        """Store finished compiles, publish run_ended, close the sinks, write summary.json."""
        self.trainer.library.close()
        self.bus.flush()
        record = self.record(status, result, error)
        clock = self.trainer.clock
        self.bus.publish(
            RunEnded(
                status=status,
                metrics=record.metrics,
                error=error,
                epoch=clock.epoch,
                step=clock.step,
            )
        )
        ranks = self.trainer.ranks
        if ranks.distributed and status in ("completed", "stopped"):
            record.ranks = self.ranks_record()
        try:
            self.bus.close(record)
        finally:
            record.sink_failures = list(self.bus.failures)
            record.wall_s = time.perf_counter() - self.started
            if ranks.writer:  # ddp: rank 0 writes the run's files
                summary = record.model_dump_json(indent=2).encode()
                try:
                    write_atomic(self.run_dir / "summary.json", summary)
                except WriteError as exc:
                    self.summary_unwritten = exc.strerror
        return record

    def ranks_record(self) -> RanksRecord:
        """Every rank's parameter digest and transitions, gathered (all ranks call this)."""
        trainer = self.trainer
        transitions = [
            (a.epoch, a.step, a.slot, a.from_state.value, a.to_state.value)
            for a in trainer.recorder.adaptations
        ]
        everyone = trainer.ranks.gather((parameter_digest(trainer.model), transitions))
        return RanksRecord(
            world=trainer.ranks.world,
            digests=[digest for digest, _ in everyone],
            adaptations_agree=all(t == everyone[0][1] for _, t in everyone),
        )
