"""Jobs sharing a kernel store compile each kernel once: concurrent processes asking for the
same kernel wait for the first compile (its claim) and load it from the store."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from esper.contracts import KernelSpec
from esper.kernels import KernelLibrary, LocalStore
from esper.kernels.claims import FileClaims
from tests.conftest import run_cli


def spec(hidden: int) -> KernelSpec:
    return KernelSpec(
        blueprint="residual_mlp",
        hparams={"hidden": hidden},
        input_shape=(6,),
        torch_version=torch.__version__,
    )


def ask(store: str, barrier: Any, asynchronous: bool) -> dict[str, int]:
    """In a fresh process: wait for the others, then ask for the same three kernels."""
    library = KernelLibrary(
        LocalStore(Path(store)),
        latency_batches=(1,),
        reference_batch=1,
        async_compile=asynchronous,
    )
    barrier.wait()
    try:
        for hidden in (4, 8, 12):
            if asynchronous:
                library.request(spec(hidden)).result()
            else:
                library.get(spec(hidden))
    finally:
        library.close()
    return {"compiles": library.counts.compiles, "waits": library.counts.claim_waits}


@pytest.mark.parametrize("asynchronous", [False, True], ids=["inline", "worker"])
def test_three_processes_compile_each_kernel_once(tmp_path: Path, asynchronous: bool) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(3)
        # not multiprocessing.Pool: its workers are daemonic and may not start compile workers
        with ProcessPoolExecutor(3, mp_context=context) as pool:
            jobs = [pool.submit(ask, str(tmp_path), barrier, asynchronous) for _ in range(3)]
            results = [job.result(timeout=240) for job in jobs]
    assert sum(r["compiles"] for r in results) == 3, results
    assert sum(r["waits"] for r in results) >= 1, "the processes did meet on a kernel"
    assert not list((tmp_path / "claims").iterdir()), "every claim was released"
    assert len(LocalStore(tmp_path).list()) == 3


def test_a_dead_claimants_claim_is_taken_over(tmp_path: Path) -> None:
    claims = FileClaims(tmp_path)
    key = "a" * 64
    dead = multiprocessing.get_context("spawn").Process(target=os.getpid)
    dead.start()
    dead.join()
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / f"{key}.claim").write_text(
        json.dumps({"host": os.uname().nodename, "pid": dead.pid, "time": 0})
    )
    assert claims.claim(key), "its process is gone: the claim is stale"
    assert not claims.claim(key), "now this process holds it"
    claims.release(key)
    assert claims.claim(key)


@pytest.mark.slow
def test_a_concurrent_sweep_on_s3_compiles_each_kernel_once(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    from esper.kernels import S3Store

    env = {
        "ESPER_S3_ENDPOINT_URL": s3_endpoint,
        "ESPER_S3_BUCKET": s3_bucket,
        **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    }
    result = run_cli(
        "-m",
        "storage=s3",
        "seed=0,1,2,3",
        "trainer.max_epochs=3",
        "logger=none",
        "trainer.quiet=true",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/summary.json")]
    assert len(summaries) == 4 and all(s["status"] == "completed" for s in summaries)
    stored = S3Store(s3_bucket, endpoint_url=s3_endpoint).list()
    compiles = sum(s["kernel_library"]["compiles"] for s in summaries)
    assert compiles == len(stored) > 0, "each distinct kernel compiled once across the sweep"
    assert sum(s["kernel_library"]["claim_waits"] for s in summaries) >= 1, "jobs met"
