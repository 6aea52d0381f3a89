"""Seeded runs whose summaries are recorded, so a refactor can prove it changed no behaviour.

`python -m tests.behaviour_baseline` re-records `tests/data/behaviour_baseline.json`; do that
only for a change meant to alter training (and say so in its commit). The test in
`tests/integration/test_behaviour_baseline.py` replays every case and compares exactly on a
machine like the one that recorded it (`MACHINE_KEY` holds its `machine()`), and decisions,
sizes and kernels exactly with metrics to a tolerance on any other.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "data" / "behaviour_baseline.json"
MACHINE_KEY = "_machine"
"""The record's entry naming the machine it was recorded on (not a case)."""
QUIET = ("logger=none", "trainer.checkpoint=false", "trainer.progress=false")
ONE_SEED = (
    "policy=random",
    "policy.germinate_probability=1.0",
    "policy.max_seeds=1",
    "policy.fossilize_probability=1.0",
    "seeds.gates.min_training_steps=0",
)
CASES: dict[str, tuple[str, ...]] = {
    "default": (),
    "heuristic_early": (
        "policy.patience=1",
        "policy.warmup_epochs=2",
        "policy.min_delta=1.0",
        "trainer.max_epochs=30",
    ),
    "random_seed3": ("policy=random", "seed=3", "trainer.max_epochs=40"),
    "merge_low_rank": (
        *ONE_SEED,
        "trainer.max_epochs=12",
        "seeds.fossilized=merge",
        "seeds.gates.fossilize_min_contribution=null",
        "model.sites=[blocks.0.0]",
        "blueprints.allowed=[low_rank]",
    ),
    "digits_cnn": (*ONE_SEED, "dataset=digits", "model=cnn", "trainer.max_epochs=10"),
    "gate_refusal": (
        *ONE_SEED[:3],
        "policy.fossilize_probability=1.0",
        "seeds.gates.min_training_steps=100000",
        "trainer.max_epochs=10",
    ),
}
"""Each case is a list of overrides on top of QUIET; together they cover heuristic and random
germination, blending, fossilize, cull by gate, merge, gate refusal, and an image host."""


def behaviour(summary: dict[str, Any]) -> dict[str, Any]:
    """What a run did, without timings: metrics, params, FLOPs, adaptations, kernels, slots."""
    return {
        "status": summary["status"],
        "metrics": summary["metrics"],
        "params": summary["params"],
        "flops_per_sample": summary["flops_per_sample"],
        "adaptations": summary["adaptations"],
        "kernels": [
            {k: kernel[k] for k in ("slot", "epoch", "blueprint", "kernel_id", "params")}
            for kernel in summary["kernels"]
        ],
        "final_slots": summary["final_slots"],
        "epochs": summary["epochs"],
    }


def machine() -> str:
    """What decides torch's CPU float results: its version, the instruction set its kernels
    dispatch to, and the CPU's feature flags (hashed)."""
    import torch

    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = [line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")]
        flags = " ".join(sorted(set(lines[0].split(":", 1)[1].split()))) if lines else ""
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    capability = torch.backends.cpu.get_cpu_capability()
    return f"torch {torch.__version__} {capability} {platform.machine()} cpu-flags {digest}"


def run_case(name: str, root: Path) -> dict[str, Any]:
    from esper.app import build

    os.environ["ESPER_KERNEL_STORE"] = str(root / "kernels")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"run_dir={root / name}", *QUIET, *CASES[name]])
    result = build(cfg).run()
    return behaviour(result if isinstance(result, dict) else result.model_dump(mode="json"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        record: dict[str, Any] = {name: run_case(name, Path(tmp)) for name in CASES}
    record[MACHINE_KEY] = machine()
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(CASES)} cases on {record[MACHINE_KEY]} in {RECORD}")


if __name__ == "__main__":
    main()
