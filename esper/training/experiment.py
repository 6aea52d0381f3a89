"""An experiment is one run: fit, then write summary.json and close every sink, even on failure."""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from esper.contracts import RunEnded, RunStarted
from esper.events import EventBus
from esper.training.trainer import FitResult, Trainer


@dataclass
class Experiment:
    trainer: Trainer
    bus: EventBus
    run_dir: Path
    config: dict[str, Any]
    choices: dict[str, Any]
    seed: int
    wandb: dict[str, Any] = field(default_factory=lambda: {"mode": "disabled", "run_dir": None})
    checkpoint: bool = True
    resumed_from: str | None = None
    started: float = field(default_factory=time.perf_counter)

    def summary(self, status: str, result: FitResult | None, error: str | None) -> dict[str, Any]:
        trainer = self.trainer
        library = trainer.library
        counts, cache = library.counts, library.cache.stats
        return {
            "status": status,
            "error": error,
            **self.choices,
            "seed": self.seed,
            "metrics": result.metrics if result else {},
            "params": result.params if result else trainer.params(),
            "flops_per_sample": result.flops if result else {},
            "adaptations": result.adaptations if result else trainer.adaptations(),
            "kernels": result.kernels if result else trainer.kernels,
            "kernel_library": {
                "store": library.store.describe(),
                "cache_hits": cache.hits,
                "cache_misses": cache.misses,
                "cache_evictions": cache.evictions,
                "cache_bytes": cache.bytes,
                "store_loads": counts.store_loads,
                "compiles": counts.compiles,
                "compile_failures": counts.compile_failures,
                "blocked_on_compile_s": trainer.kernel_blocked_s,
                "quarantined": counts.quarantined,
            },
            "quarantined": [
                e.model_dump(mode="json") for e in self.bus.of_kind("kernel_quarantined")
            ],
            "final_slots": {
                s.name: {"state": s.state.value, "blueprint": s.blueprint}
                for s in trainer.model.iter_slots()
            },
            "epochs": len(trainer.history),
            "resumed_from": self.resumed_from,
            "checkpoint": str(self.checkpoint_path) if self.checkpoint else None,
            "wandb": self.wandb,
            "wall_s": time.perf_counter() - self.started,
        }

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def save_checkpoint(self, epoch: int | None = None) -> Path:
        """Written each epoch, atomically: a crash mid-write leaves the previous checkpoint."""
        path = self.checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.trainer.state_dict()
        state["config"] = self.config
        state["wandb_run_id"] = self.wandb.get("run_id")
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def run(self) -> dict[str, Any]:
        self.bus.publish(RunStarted(config=self.config, resumed_from=self.resumed_from))
        self.bus.flush()
        result: FitResult | None = None
        if self.checkpoint:
            self.trainer.on_epoch_end = self.save_checkpoint
        try:
            result = self.trainer.fit()
        except BaseException as exc:
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.trainer.library.close()
            summary = self.summary("failed", None, error)
            self.bus.publish(
                RunEnded(
                    status="failed",
                    metrics={},
                    error=error,
                    epoch=self.trainer.epoch,
                    step=self.trainer.step,
                )
            )
            self._finish(summary)
            raise
        self.trainer.library.close()  # finished background compiles are stored, then counted
        stopped = len(self.trainer.history) < self.trainer.max_epochs
        summary = self.summary("stopped" if stopped else "completed", result, None)
        self.bus.publish(
            RunEnded(
                status=summary["status"],
                metrics=result.metrics,
                epoch=self.trainer.epoch,
                step=self.trainer.step,
            )
        )
        self._finish(summary)
        return summary

    def _finish(self, summary: dict[str, Any]) -> None:
        path = self.run_dir / "summary.json"
        try:
            self.bus.close(summary)
        finally:
            summary["wall_s"] = time.perf_counter() - self.started
            path.write_text(json.dumps(summary, indent=2, default=str))
