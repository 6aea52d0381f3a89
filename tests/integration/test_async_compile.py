"""Compilation in a worker process while training goes on; failures cull the seed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from torch import nn

from esper import blueprints
from esper.app import build
from tests.conftest import ONE_EARLY_SEED


@blueprints.register("explodes_for_test", kinds=("vector",), description="always fails")
def explodes(shape: tuple[int, ...]) -> nn.Module:
    raise RuntimeError("builder exploded on purpose")


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def early_seed(*extra: str) -> list[str]:
    # no preflight: these tests are about compiles during training (in the worker or inline)
    return [
        *ONE_EARLY_SEED,
        "trainer.max_epochs=8",
        "blueprints.allowed=[residual_mlp]",
        "kernels.preflight=false",
        *extra,
    ]


def test_training_continues_while_the_kernel_compiles(make_config, tmp_path) -> None:
    run_dir = tmp_path / "run"
    summary = (
        build(make_config(*early_seed("kernels.wait_epochs=3"), run_dir=run_dir))
        .run()
        .model_dump(mode="json")
    )
    log = events(run_dir)
    requested = next(e for e in log if e["kind"] == "kernel_requested")
    loaded = next(e for e in log if e["kind"] == "kernel_loaded")
    assert (requested["ready"], loaded["source"]) == (False, "compiled")
    during = [
        e
        for e in log
        if e["kind"] == "epoch_ended" and requested["time"] < e["time"] < loaded["time"]
    ]
    assert len(during) >= 2, "epochs finished while the worker compiled"
    assert loaded["epoch"] == requested["epoch"] + 3, "attached exactly wait_epochs later"
    transitions = [(a["epoch"], a["to"]) for a in summary["adaptations"]]
    assert transitions[:2] == [(requested["epoch"], "GERMINATED"), (loaded["epoch"], "TRAINING")]


def test_async_and_inline_compiles_give_the_same_run(make_config, tmp_path, monkeypatch) -> None:
    results = []
    for mode in ("true", "false"):
        monkeypatch.setenv("ESPER_KERNEL_STORE", str(tmp_path / f"store-{mode}"))
        cfg = make_config(*early_seed(f"kernels.async_compile={mode}"), run_dir=tmp_path / mode)
        results.append(build(cfg).run().model_dump(mode="json"))
    assert results[0]["metrics"] == results[1]["metrics"]
    assert results[0]["adaptations"] == results[1]["adaptations"]


@pytest.mark.parametrize("async_compile", ["true", "false"])
def test_failed_compile_culls_the_seed_with_the_error(make_config, tmp_path, async_compile) -> None:
    run_dir = tmp_path / "run"
    cfg = make_config(
        *early_seed(f"kernels.async_compile={async_compile}"),
        "blueprints.allowed=[explodes_for_test]",
        run_dir=run_dir,
    )
    summary = build(cfg).run().model_dump(mode="json")
    assert summary["status"] == "completed"
    culled = [a for a in summary["adaptations"] if a["to"] == "CULLED"]
    assert len(culled) == 1
    assert culled[0]["from"] == "GERMINATED"
    assert "kernel failed: RuntimeError: builder exploded on purpose" in culled[0]["reason"]
    assert summary["kernel_library"]["compile_failures"] == 1
    failed = [e for e in events(run_dir) if e["kind"] == "kernel_failed"]
    assert len(failed) == 1 and "exploded" in failed[0]["error"]


def test_prewarm_compiles_every_offered_blueprint_at_start(make_config, tmp_path) -> None:
    run_dir = tmp_path / "run"
    cfg = make_config(
        "kernels.prewarm=true",
        "policy=none",
        "trainer.max_epochs=3",
        "logger=none",
        "kernels.wait_epochs=1",
        run_dir=run_dir,
    )
    summary = build(cfg).run().model_dump(mode="json")
    prewarmed = [e for e in events(run_dir) if e["kind"] == "kernel_requested"]
    assert sorted(e["blueprint"] for e in prewarmed) == [
        "low_rank",
        "residual_block",
        "residual_mlp",
    ]
    assert all(e["slot"] == "prewarm" for e in prewarmed)
    library = summary["kernel_library"]
    assert library["compiles"] == 3


@pytest.mark.parametrize(
    ("overrides", "said", "free_pages"),
    [
        (("kernels.async_compile=true",), "the run failed", None),
        (("kernels.async_compile=false",), "the run failed", None),
        (("kernels.preflight=true",), "the run could not start", None),
        (("kernels.async_compile=true",), "the run failed", 13),
        (("kernels.preflight=true",), "the run could not start", 13),
    ],
    ids=["worker", "inline", "preflight", "index-worker", "index-preflight"],
)
def test_a_kernel_store_that_cannot_be_written_fails_the_run(
    tmp_path, overrides, said, free_pages
) -> None:
    """A full disk under the kernel store is no seed's or blueprint's fault. During training
    it culled every seed (`kernel failed: WriteError ...`) and the run completed as a static
    model, `compile_failures` 0; in preflight (helper-found) it read `blueprint 'residual_mlp'
    ... cannot be exported: OSError: [Errno 28]`, exit 2. Now the file and the cause, exit 1.
    With `free_pages` the disk holds an index and room for the kernel's object but not for its
    index row (helper-found: `OperationalError: database or disk is full` culled the seed, or
    blamed the blueprint); the object it does not list is removed."""
    from esper.kernels.local_store import LocalStore
    from tests.conftest import run_cli, small_disk

    run_dir = tmp_path / "run"
    with small_disk(tmp_path / "store", "64k" if free_pages is None else "256k") as store:
        if free_pages is not None:
            LocalStore(store)  # its index
            disk = os.statvfs(store)
            (store / "filler").write_bytes(b"\0" * (disk.f_bavail - free_pages) * disk.f_frsize)
        result = run_cli(
            *early_seed(*overrides),
            "trainer.progress=false",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
            env={"ESPER_KERNEL_STORE": str(store)},
        )
        objects = sorted(p.name for p in store.glob("objects/*/*"))
    assert result.returncode == 1, result.stderr[-3000:]
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("esper:")]
    assert line.startswith(f"esper: {said}: cannot write {store}/"), line
    assert "(ENOSPC)" in line and "blueprint" not in line, line
    if free_pages is not None:
        assert line.startswith(f"esper: {said}: cannot write {store}/index.sqlite: "), line
        assert objects == [], "no object the index does not list"
    if said == "the run failed":
        log = events(run_dir)
        assert not [e for e in log if e["kind"] == "kernel_failed"]
        assert not [e for e in log if e["kind"] == "adaptation" and e["to"] == "CULLED"]
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
