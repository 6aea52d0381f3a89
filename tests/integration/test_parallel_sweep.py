"""A parallel sweep grows exactly like a sequential one.

Under `hydra/launcher=joblib` each job runs in a loky worker process. Such a process carries the
start method "loky", which a plain `spawn` child re-applies before anything else and dies of
("cannot find context for 'loky'"): the compile worker never started, every germination was
culled with BrokenProcessPool and the jobs still said `completed`. These tests failed that way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from esper.contracts import KernelSpec
from esper.kernels import KernelLibrary, LocalStore
from tests.conftest import run_cli


def compile_in_this_process(store: str) -> dict[str, Any]:
    """Ask a fresh library for one kernel and say how it was made (runs in a loky worker)."""
    library = KernelLibrary(LocalStore(Path(store)), latency_batches=(1,), reference_batch=1)
    spec = KernelSpec(
        blueprint="residual_mlp",
        hparams={"hidden": 8},
        input_shape=(4,),
        torch_version=torch.__version__,
    )
    try:
        loaded = library.request(spec).result()
    finally:
        library.close()
    return {
        "pid": os.getpid(),
        "source": loaded.source,
        "async_compile": library.async_compile,
        "fallback": library.fallback,
        "compiles": library.counts.compiles,
    }


def test_the_compile_worker_starts_inside_a_loky_worker(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    [made] = joblib.Parallel(n_jobs=2, backend="loky")(
        [joblib.delayed(compile_in_this_process)(str(tmp_path / "store"))]
    )
    assert made["pid"] != os.getpid(), "ran in a loky worker, as a joblib sweep's job does"
    assert made == {**made, "source": "compiled", "async_compile": True, "fallback": None}
    assert made["compiles"] == 1


SWEEP = (
    "-m",
    "policy=heuristic",
    "seed=0,1",
    "trainer.max_epochs=12",
    "policy.patience=1",
    "policy.warmup_epochs=2",
    "policy.min_delta=1.0",
    "trainer.progress=false",
    "logger=none",
    "kernels.preflight=false",
)
"""Two jobs whose heuristic policy germinates early (a plateau after 1 epoch) and often, with
their kernels compiled by the worker during training (a preflight would compile them all
before training, in the job's own process, and the worker would have nothing to do)."""

LAUNCHERS = {"basic": (), "joblib": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")}


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the launcher: everything but timings and where kernels came
    from (a parallel job may compile what a sequential one found in the store)."""
    return {
        "status": summary["status"],
        "metrics": summary["metrics"],
        "params": summary["params"],
        "adaptations": summary["adaptations"],
        "kernels": [
            {k: kernel[k] for k in ("slot", "epoch", "kernel_id", "blueprint", "params")}
            for kernel in summary["kernels"]
        ],
        "final_slots": summary["final_slots"],
        "epochs": summary["epochs"],
    }


@pytest.mark.slow  # `python run.py -m` in subprocesses, twice
def test_a_parallel_sweep_grows_exactly_like_a_sequential_one(tmp_path: Path) -> None:
    summaries: dict[str, list[dict[str, Any]]] = {}
    for launcher, extra in LAUNCHERS.items():
        sweep = tmp_path / launcher
        result = run_cli(
            *SWEEP,
            *extra,
            f"hydra.sweep.dir={sweep}",
            cwd=tmp_path,
            env={"ESPER_KERNEL_STORE": str(tmp_path / f"kernels-{launcher}")},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        summaries[launcher] = [
            json.loads((sweep / str(job) / "summary.json").read_text()) for job in (0, 1)
        ]
    for jobs in summaries.values():
        assert [j["kernel_library"]["compile_mode"] for j in jobs] == ["worker", "worker"]
        assert [j["kernel_library"]["fallback"] for j in jobs] == [None, None]
        assert sum(j["kernel_library"]["compiles"] for j in jobs) >= 1, "the worker compiled"
    for job in (*summaries["basic"], *summaries["joblib"]):
        reasons = [a["reason"] for a in job["adaptations"]]
        assert not [r for r in reasons if r.startswith("kernel failed")], reasons
        assert {"TRAINING", "FOSSILIZED"} & {a["to"] for a in job["adaptations"]}, "it grew"
        assert job["kernels"], "a kernel was attached"
    assert [comparable(s) for s in summaries["joblib"]] == [
        comparable(s) for s in summaries["basic"]
    ]
