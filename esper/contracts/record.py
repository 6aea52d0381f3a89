"""The run record: what summary.json holds, typed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from esper.contracts.base import SeedState
from esper.contracts.events import Adaptation, KernelQuarantined, RunStatus
from esper.contracts.kernels import LatencyPoint


class AdaptationRecord(BaseModel):
    """One lifecycle transition, as summary.json and the W&B adaptations table list it."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)
    epoch: int
    step: int
    slot: str
    blueprint: str | None
    from_state: SeedState = Field(alias="from")
    to_state: SeedState = Field(alias="to")
    reason: str = ""

    @classmethod
    def of(cls, event: Adaptation) -> AdaptationRecord:
        return cls(**event.model_dump(include=set(cls.model_fields)))


class KernelRecord(BaseModel):
    """A kernel attached to a slot: where it came from, what it costs, how fast it ran."""

    slot: str
    epoch: int
    """The epoch whose control step attached it."""
    kernel_id: str
    blueprint: str
    params: int
    latency_us_p50: float
    """Forward latency at `latency_batch`, measured when the kernel was characterised."""
    latency_us_p95: float
    latency_batch: int
    characterisation: list[LatencyPoint]
    compile_s: float
    wait_s: float
    """Seconds from the kernel's request to its attachment."""
    source: Literal["memory", "store", "compiled"]
    """Where the kernel came from: the in-memory cache, the store, or a compile in this run
    (the library's `kernel_cache/*` counters count the in-memory cache alone)."""
    train_latency_us_p50: float | None = None
    """Forward latency sampled in the training pass (every `seeds.latency_sample_every`)."""
    train_latency_us_p95: float | None = None
    train_latency_samples: int = 0


class KernelLibraryRecord(BaseModel):
    """The kernel library's counters at the end of the run."""

    store: str
    cache_hits: int
    cache_misses: int
    cache_evictions: int
    cache_bytes: int
    store_loads: int
    compiles: int
    claim_waits: int = 0
    """Kernels another job sharing the store was compiling: waited for, then loaded."""
    compile_failures: int
    blocked_on_compile_s: float
    """Training time spent waiting for a compile that was due but not finished."""
    compile_mode: Literal["worker", "inline"]
    """Where compiles ran: a worker process (`kernels.async_compile`) or this process."""
    fallback: str | None = None
    """Why compiles ran inline although a worker was configured (None: no fallback)."""
    quarantined: list[str]


class SlotRecord(BaseModel):
    state: SeedState
    blueprint: str | None


class RanksRecord(BaseModel):
    """A data-parallel run (`trainer.strategy=ddp`): how its ranks ended."""

    world: int
    digests: list[str]
    """SHA-256 of each rank's parameters and buffers at the end, by rank: all equal means the
    ranks stayed bitwise in sync."""
    adaptations_agree: bool
    """Whether every rank made the same transitions at the same steps as rank 0."""


class RunRecord(BaseModel):
    """summary.json: what a run was, what it did and what it reached. The one record that the
    console, the W&B sink, the report and the tests read."""

    status: RunStatus
    error: str | None = None
    choices: dict[str, str]
    """The option chosen in each config group (`custom` when composed outside Hydra)."""
    allowed_blueprints: list[str]
    sites: list[str]
    config_hash: str
    """SHA-256 of the configuration less seed, paths, storage and logging: names the experiment."""
    seed: int
    policy: dict[str, Any] = Field(default_factory=dict)
    """The policy's own account (`Policy.describe()`): settings, where a learned policy's
    weights came from, the scatter backends it chose."""
    metrics: dict[str, float]
    """Final train/val/test loss and accuracy; empty when the run failed."""
    split_sizes: dict[str, int] = Field(default_factory=dict)
    """Examples in each split (train, val, test): what the metrics were measured on (a
    dataset's limit or fraction shows here; helper-found: nothing recorded it)."""
    params: dict[str, int]
    """host, seeds, total."""
    flops_per_sample: dict[str, int]
    """Forward FLOPs a sample: host alone and the grown model (total)."""
    train_flops: int = 0
    """Forward + backward FLOPs of every training step of the run, counted by torch for each
    morphology the model had (the cost of training it, growth included)."""
    adaptations: list[AdaptationRecord]
    kernels: list[KernelRecord]
    kernel_library: KernelLibraryRecord
    quarantined: list[KernelQuarantined]
    final_slots: dict[str, SlotRecord]
    epochs: int
    """Epochs trained, a resumed run's earlier ones included."""
    skipped_steps: int = 0
    """Optimizer steps skipped because the loss or a gradient was non-finite."""
    resumed_from: str | None = None
    checkpoint: str | None = None
    wandb: dict[str, Any]
    """mode (offline, online, disabled, failed), run_dir, run_id; `error` when W&B failed to
    start (the run went on without it)."""
    sink_failures: list[str] = Field(default_factory=list)
    ranks: RanksRecord | None = None
    """Set for a ddp run that ended with its ranks together (completed or stopped)."""
    """Sinks that failed during the run and were dropped (`WandbSink: OSError: ...`)."""
    wall_s: float

    def objective(self, metric: str, param_cost: float) -> float:
        """What a sweeper optimises (`optimized_metric`): a train/val metric, or
        `val_accuracy_at_cost` = val accuracy - param_cost x (seed params / 1,000): the same cost
        Simic's reward charges (esper.simic.reward)."""
        if metric == "val_accuracy_at_cost":
            added = self.params.get("seeds", 0) / 1000
            return self.metrics["val_accuracy"] - param_cost * added
        return self.metrics[metric]
