"""The metric schema: every key a run logs to W&B, what it means and when it is logged.

One list, read three ways: the README's table is rendered from it (`python -m
esper.events.schema` prints the markdown), the W&B read-back test checks every key against a
real run, and the offline report reads the same keys from events.jsonl. A `<slot>`,
`<blueprint>` or `<operation>` in a key stands for each slot, blueprint or policy operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from esper.contracts.base import SeedState

When = Literal["epoch", "end", "kernel", "control", "table"]
WHEN_TEXT = {
    "epoch": "every epoch",
    "end": "once, at the end",
    "kernel": "when a kernel is attached",
    "control": "every control step (policies that report probabilities: gnn)",
    "table": "a table, at the end",
}

STATE_CODES: dict[SeedState, int] = {state: code for code, state in enumerate(SeedState)}
"""`seeds/<slot>/state` is logged as a number (W&B plots numbers): this code."""


@dataclass(frozen=True)
class Metric:
    key: str
    meaning: str
    when: When

    def matches(self, logged: str) -> bool:
        """`kernel/linear/latency_us_p50` matches `kernel/<blueprint>/latency_us_p50`."""
        want, got = self.key.split("/"), logged.split("/")
        return len(want) == len(got) and all(
            w == g or (w.startswith("<") and w.endswith(">")) for w, g in zip(want, got)
        )


_states = ", ".join(f"{code} {state.value}" for state, code in STATE_CODES.items())

SCHEMA: tuple[Metric, ...] = (
    Metric("epoch", "The epoch the row belongs to (0-based).", "epoch"),
    Metric("train/loss", "Mean training loss over the epoch's steps.", "epoch"),
    Metric("train/accuracy", "Training accuracy over the epoch (as the model trained).", "epoch"),
    Metric("train/skipped_steps", "Optimizer steps skipped so far: non-finite loss.", "epoch"),
    Metric("val/loss", "Validation loss at the end of the epoch.", "epoch"),
    Metric("val/accuracy", "Validation accuracy; what policies and gates see.", "epoch"),
    Metric("test/loss", "Test loss, read once after the last epoch.", "end"),
    Metric("test/accuracy", "Test accuracy, read once after the last epoch.", "end"),
    Metric("params/host", "Parameters of the host model.", "epoch"),
    Metric("params/seeds", "Parameters the seeds add (every non-dormant seed).", "epoch"),
    Metric("params/total", "host + seeds.", "epoch"),
    Metric(
        "flops/train_per_sample",
        "Forward + backward FLOPs of one training sample, this epoch's morphology.",
        "epoch",
    ),
    Metric("flops/train_total", "Training FLOPs counted so far (every step).", "epoch"),
    Metric("flops/forward_host", "Forward FLOPs a sample of the host alone.", "end"),
    Metric("flops/forward_total", "Forward FLOPs a sample of the grown model.", "end"),
    Metric("seeds/active", "Slots holding a seed (not DORMANT).", "epoch"),
    Metric("seeds/<slot>/state", f"The slot's lifecycle state: {_states}.", "epoch"),
    Metric("seeds/<slot>/alpha", "The slot's blend weight: 0 isolated, 1 fully in.", "epoch"),
    Metric("epoch_s", "Wall seconds of the epoch (train, val, control).", "epoch"),
    Metric(
        "kernel/<blueprint>/latency_us_p50",
        "Kernel forward latency (median, µs) characterised at load, at the library's batch.",
        "kernel",
    ),
    Metric("kernel/<blueprint>/latency_us_p95", "As above, 95th percentile.", "kernel"),
    Metric(
        "kernel/<blueprint>/compile_s",
        "Seconds the kernel's compile took when it was made (a stored kernel keeps its figure).",
        "kernel",
    ),
    Metric(
        "kernel/<blueprint>/train_latency_us_p50",
        "Forward latency (median, µs) sampled in the training pass this epoch.",
        "epoch",
    ),
    Metric("kernel/<blueprint>/train_latency_us_p95", "As above, 95th percentile.", "epoch"),
    Metric("kernel_cache/hits", "In-memory kernel cache hits so far.", "epoch"),
    Metric("kernel_cache/misses", "Cache misses so far (store load or compile).", "epoch"),
    Metric("kernel_cache/evictions", "Kernels evicted by the cache's byte budget.", "epoch"),
    Metric("kernel_cache/bytes", "Bytes the cache holds.", "epoch"),
    Metric("kernel_library/store_loads", "Kernels loaded from the store so far.", "epoch"),
    Metric("kernel_library/compiles", "Kernels compiled so far.", "epoch"),
    Metric("kernel_library/quarantined", "Stored kernels that failed verification.", "epoch"),
    Metric("seeds/adaptations", "Lifecycle transitions so far.", "epoch"),
    Metric("policy/p/<operation>", "Probability the policy gave each operation.", "control"),
    Metric("policy/entropy", "Entropy (nats) of the policy's operation distribution.", "control"),
    Metric(
        "adaptations",
        "epoch, step, slot, blueprint, from, to, reason, params (the seed's parameters after "
        "the transition), val_before (val accuracy the decision saw), val_after (the next "
        "epoch's).",
        "table",
    ),
    Metric(
        "seed_timeline",
        "slot, blueprint, state, start_epoch, end_epoch, start_step, end_step: one row per "
        "slot and state interval (a Gantt panel).",
        "table",
    ),
    Metric(
        "decisions",
        "epoch, policy, action, slot, blueprint, probabilities, reason: every decision.",
        "table",
    ),
)
"""Every key; the W&B run summary also carries summary.json's fields, flattened with `/`
(`metrics/test_accuracy`, `params/total`, ...), and its `config` is the resolved Hydra config."""


def documented(key: str) -> bool:
    """Whether a logged key is in the schema."""
    return any(metric.matches(key) for metric in SCHEMA)


def markdown() -> str:
    lines = ["| key | meaning | logged |", "|---|---|---|"]
    for metric in SCHEMA:
        lines.append(f"| `{metric.key}` | {metric.meaning} | {WHEN_TEXT[metric.when]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
