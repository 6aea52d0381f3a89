"""Data-parallel training under a real `torchrun` (2 ranks, gloo on CPU): rank 0 decides and
broadcasts, every rank applies the decisions in the same step, the ranks end bitwise equal,
only rank 0 writes, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, own_env, run_cli

pytestmark = pytest.mark.slow  # torchrun starts two Python processes a run

EARLY = (
    "trainer.strategy=ddp",
    "trainer.max_epochs=12",
    "policy.patience=1",
    "policy.warmup_epochs=2",
    "policy.min_delta=1.0",
    "logger=none",
    "trainer.progress=false",
)


def torchrun_process(
    tmp_path: Path, run_dir: Path, *overrides: str, store: Path | None = None
) -> subprocess.Popen[str]:
    """`torchrun --standalone --nproc_per_node=2 run.py ARGS`, running, with its kernel store
    at `store` (default: one of its own under tmp_path)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "run.py"),
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=own_env(ESPER_KERNEL_STORE=str(store or tmp_path / "kernels"), OMP_NUM_THREADS="1"),
    )


def torchrun(tmp_path: Path, run_dir: Path, *overrides: str) -> dict:
    process = torchrun_process(tmp_path, run_dir, *EARLY, *overrides)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    return tmp, torchrun(tmp, tmp / "run")


def test_two_ranks_end_bitwise_equal_with_the_same_adaptations(ddp_run) -> None:
    tmp, summary = ddp_run
    assert summary["status"] == "completed"
    ranks = summary["ranks"]
    assert ranks["world"] == 2
    assert len(set(ranks["digests"])) == 1, "host and seed parameters bitwise equal on both"
    assert ranks["adaptations_agree"], "rank 1 made rank 0's transitions at the same steps"
    assert len(summary["adaptations"]) >= 2
    assert any(a["to"] == "TRAINING" for a in summary["adaptations"]), "a seed trained"


def test_only_rank_zero_writes_and_decisions_apply_in_their_step(ddp_run) -> None:
    tmp, summary = ddp_run
    run_dir = tmp / "run"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".hydra",
        "checkpoints",
        "events.jsonl",
        "run.log",
        "summary.json",
    ]
    assert summary["kernel_library"]["compiles"] >= 1, "rank 0 compiled"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events].count("run_started") == 1, "one writer"
    decided = {
        (e["step"], d["slot"])
        for e in events
        if e["kind"] == "decision_made"
        for d in e["decisions"]
        if d["action"] == "germinate"
    }
    germinated = {(a["step"], a["slot"]) for a in summary["adaptations"] if a["to"] == "GERMINATED"}
    assert germinated and germinated == decided, "each germination in its decision's step"
    # helper-found: rank 1 wrote rank 0's run.log too, every line of it twice
    logged = (run_dir / "run.log").read_text()
    assert logged.count(" split  |   loss  | accuracy") == 1, "one result table"


def test_a_resumed_ddp_run_equals_an_uninterrupted_one(ddp_run) -> None:
    tmp, whole = ddp_run
    half = torchrun(tmp, tmp / "half", "trainer.stop_after_epoch=5")
    assert half["status"] == "stopped" and half["epochs"] == 6
    resumed = torchrun(tmp, tmp / "resumed", f"trainer.resume={tmp / 'half'}")
    assert resumed["status"] == "completed" and resumed["epochs"] == 12
    assert resumed["ranks"]["digests"] == whole["ranks"]["digests"]
    assert resumed["metrics"] == whole["metrics"]
    assert resumed["adaptations"] == whole["adaptations"]


def test_a_last_batch_smaller_than_the_ranks_trains_as_one_process_does(tmp_path: Path) -> None:
    """helper-found: spirals' 1,200 training points in batches of 109 leave a last batch of
    one; rank 1's empty slice had a NaN loss that skipped that step on every rank, each
    epoch, without a word (and at batch size 1 every step, said as a divergence)."""
    short = ("dataset.batch_size=109", "trainer.max_epochs=4", "trainer.checkpoint=false")
    ddp = torchrun(tmp_path, tmp_path / "ddp", *short)
    alone = run_cli(
        *(o for o in EARLY if o != "trainer.strategy=ddp"),
        *short,
        f"hydra.run.dir={tmp_path / 'alone'}",
        cwd=tmp_path,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "kernels"), "OMP_NUM_THREADS": "1"},
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    single = json.loads((tmp_path / "alone" / "summary.json").read_text())
    assert ddp["skipped_steps"] == single["skipped_steps"] == 0
    assert ddp["adaptations"] == single["adaptations"]
    for key, value in single["metrics"].items():
        assert ddp["metrics"][key] == pytest.approx(value, abs=1e-5), key


def test_a_sweep_under_torchrun_is_one_line_before_any_job(tmp_path: Path) -> None:
    """helper-found: `torchrun ... run.py -m ...` ran the sweep in every rank; its second job
    hung for the process group's ten minutes, deaf to SIGTERM."""
    process = torchrun_process(tmp_path, tmp_path / "run", "-m", "seed=0,1", *EARLY)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    said = [line for line in stderr.splitlines() if line.startswith("esper:")]
    assert said and all(line.startswith("esper: -m under torchrun (2 processes)") for line in said)
    assert not list(tmp_path.glob("**/summary.json")), "no job ran"


def test_ddp_outside_torchrun_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli(f"hydra.run.dir={tmp_path / 'run'}", "trainer.strategy=ddp", cwd=tmp_path)
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("esper:")]
    assert "trainer.strategy=ddp needs torchrun" in line


def test_torchrun_without_strategy_ddp_is_one_clear_line(tmp_path: Path) -> None:
    """Adversarial pass: under torchrun the default strategy ran the whole run in every rank,
    two runs interleaved in one run directory."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "run.py"),
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger=none",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels")),
    )
    assert result.returncode != 0
    assert "trainer.strategy=single under torchrun" in result.stderr
    assert not (tmp_path / "run" / "events.jsonl").exists()


def test_a_write_rank_zero_cannot_make_stops_every_rank_with_its_reason(tmp_path: Path) -> None:
    """helper-found: rank 0's checkpoint write failing (a full disk) gave rank 0's one line,
    then rank 1, left in its next all-reduce, failed with a traceback (`Connection closed by
    peer`). Now each rank stops after the same epoch with rank 0's reason; torchrun still
    reports the failed ranks in its own words."""
    from tests.conftest import block_after_first_checkpoint

    run_dir = tmp_path / "run"
    process = torchrun_process(
        tmp_path,
        run_dir,
        "trainer.strategy=ddp",
        "trainer.max_epochs=500",
        "policy=none",
        "logger=none",
        "trainer.progress=false",
    )
    block_after_first_checkpoint(process, run_dir, ["checkpoints/last.pt.tmp"])
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]
    said = [line for line in stderr.splitlines() if line.startswith("esper:")]
    reason = f"cannot write {run_dir}/checkpoints/last.pt: Is a directory (EISDIR)"
    assert sorted(said) == [
        f"esper: the run failed: {reason}; the previous file is kept",  # rank 0
        f"esper: the run failed: rank 0 {reason}; the previous file is kept",  # rank 1
    ], stderr[-3000:]
    assert "Connection closed" not in stderr and f"{ROOT / 'esper'}" not in stderr, stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "EISDIR" in summary["error"]


def test_a_bug_in_rank_zeros_policy_is_its_traceback_and_one_line_on_rank_one(
    tmp_path: Path,
) -> None:
    """Stop 30's item: a failure on rank 0 that is neither a write nor a config error (a bug
    in a policy, which runs on rank 0 alone) gave rank 0's traceback, and rank 1, left in the
    decisions' broadcast, a second one (`Connection closed by peer`) that names no cause. Now
    rank 0 keeps its traceback, rank 1 says one line naming it, and the summary says failed."""
    run_dir = tmp_path / "run"
    process = torchrun_process(
        tmp_path,
        run_dir,
        "trainer.strategy=ddp",
        "trainer.max_epochs=10",
        "policy=none",
        "policy._target_=tests.faults.poisoned.PolicyThatFails",
        "logger=none",
        "trainer.progress=false",
    )
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]
    assert "Connection closed" not in stderr, stderr[-3000:]
    said = [line for line in stderr.splitlines() if line.startswith("esper:")]
    assert said == [
        "esper: the run failed: rank 0 failed: ZeroDivisionError: a bug in the policy "
        "(rank 0 printed its traceback)"
    ], stderr[-3000:]
    assert stderr.count("ZeroDivisionError: a bug in the policy\n") == 1, "rank 0's traceback"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["epochs"] == 2
    assert summary["error"] == "ZeroDivisionError: a bug in the policy"


@pytest.mark.parametrize(
    ("where", "overrides"),
    [
        ("kernel store", ("kernels.preflight=false",)),
        ("kernel store", ("kernels.preflight=true",)),
        ("run directory", ()),
    ],
    ids=["store-in-training", "store-in-preflight", "events-at-start"],
)
def test_a_full_disk_only_rank_zero_writes_to_stops_every_rank(
    tmp_path: Path, where: str, overrides: tuple[str, ...]
) -> None:
    """helper-found: a kernel store that fills (rank 0 compiles; in training or in preflight)
    or a run directory full before events.jsonl's first line: rank 0 said why, rank 1 failed
    in its next collective with a traceback. Now both stop with the reason, exit 1."""
    from tests.conftest import small_disk

    disk = tmp_path / "disk"
    with small_disk(disk, "64k" if where == "kernel store" else "16k"):
        process = torchrun_process(
            tmp_path,
            disk / "run" if where == "run directory" else tmp_path / "run",
            "trainer.strategy=ddp",
            "policy=random",
            "policy.germinate_probability=1.0",
            "policy.max_seeds=1",
            "trainer.max_epochs=6",
            "logger=none",
            "trainer.progress=false",
            *overrides,
            store=disk if where == "kernel store" else None,
        )
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]
    said = sorted(line for line in stderr.splitlines() if line.startswith("esper:"))
    assert len(said) == 2, stderr[-3000:]
    assert said[1].startswith(said[0][: said[0].index("cannot write")] + "rank 0 cannot write")
    assert said[1].endswith(said[0][said[0].index("cannot write") + len("cannot write") :])
    assert f"cannot write {disk}/" in said[0] and "(ENOSPC)" in said[0], said[0]
    assert "Connection closed" not in stderr and f"{ROOT / 'esper'}" not in stderr, stderr[-3000:]
