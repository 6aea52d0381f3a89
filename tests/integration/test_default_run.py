"""`python run.py` as a user runs it, and everything it leaves behind, read back from disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esper.events.wandb_file import read_run
from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # `python run.py` in subprocesses

LIFE = ["GERMINATED", "TRAINING", "BLENDING"]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("default")
    run_dir = root / "run"
    result = run_cli(
        f"hydra.run.dir={run_dir}", cwd=root, env={"ESPER_KERNEL_STORE": str(root / "kernels")}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    return run_dir, summary, result.stdout


def test_summary_holds_the_contract(default_run) -> None:
    _, summary, _ = default_run
    assert summary["status"] == "completed"
    assert {
        k: summary["choices"][k] for k in ("dataset", "model", "policy", "blueprints", "storage")
    } == {
        "dataset": "spirals",
        "model": "mlp",
        "policy": "heuristic",
        "blueprints": "all",
        "storage": "local",
    }
    assert summary["seed"] == 0
    assert set(summary["metrics"]) == {
        f"{s}_{m}" for s in ("train", "val", "test") for m in ("loss", "accuracy")
    }
    assert summary["split_sizes"] == {"train": 1200, "val": 400, "test": 400}  # 2,000 points
    params = summary["params"]
    assert params["host"] == 2 * 8 + 8 + 8 * 8 + 8 + 8 * 2 + 2
    flops = summary["flops_per_sample"]
    assert flops["host"] == 2 * (2 * 8 + 8 * 8 + 8 * 2), "a multiply-add counts two"
    fossilized = [
        k for k in summary["kernels"] if summary["final_slots"][k["slot"]]["state"] == "FOSSILIZED"
    ]
    assert flops["total"] == flops["host"] + len(fossilized) * 2 * (2 * 8 * 64)
    assert params["total"] == params["host"] + params["seeds"]
    assert summary["wandb"]["mode"] == "offline"
    assert Path(summary["wandb"]["run_dir"]).is_dir()
    assert summary["wall_s"] > 0
    for a in summary["adaptations"]:
        assert set(a) == {"epoch", "step", "slot", "blueprint", "from", "to", "reason"}
    for k in summary["kernels"]:
        assert {
            "kernel_id",
            "blueprint",
            "latency_us_p50",
            "latency_us_p95",
            "compile_s",
            "source",
        } <= set(k)
        assert len(k["kernel_id"]) == 64 and k["source"] in ("memory", "store", "compiled")


def test_a_seed_lives_a_whole_life(default_run) -> None:
    _, summary, _ = default_run
    by_slot: dict[str, list[str]] = {}
    for a in summary["adaptations"]:
        by_slot.setdefault(a["slot"], []).append(a["to"])
    ended = [
        path
        for path in by_slot.values()
        if path[:3] == LIFE and len(path) > 3 and path[3] in ("FOSSILIZED", "CULLED")
    ]
    assert ended, by_slot
    judged = [a for a in summary["adaptations"] if a["to"] in ("FOSSILIZED", "CULLED")]
    assert all("contribution" in a["reason"] for a in judged)
    assert summary["params"]["seeds"] == sum(
        k["params"]
        for k in summary["kernels"]
        if summary["final_slots"][k["slot"]]["state"] == "FOSSILIZED"
    )


def test_result_table_is_printed(default_run) -> None:
    _, summary, stdout = default_run
    assert " test   |" in stdout and "params: host" in stdout
    assert f"{summary['metrics']['test_accuracy']:8.4f}" in stdout
    kernel_lines = [line.split() for line in stdout.splitlines() if line.startswith("  kernel ")]
    assert [words[1:4] for words in kernel_lines] == [
        [k["kernel_id"][:12], k["blueprint"], k["slot"]] for k in summary["kernels"]
    ], "each kernel line names the slot it serves (two slots may share a kernel)"


def test_events_jsonl_mirrors_the_summary(default_run) -> None:
    run_dir, summary, _ = default_run
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_ended"
    assert kinds.count("epoch_ended") == 80
    adaptations = [
        {k: e[k] for k in ("epoch", "step", "slot", "blueprint", "from", "to", "reason")}
        for e in events
        if e["kind"] == "adaptation"
    ]
    assert adaptations == summary["adaptations"]
    assert kinds.count("kernel_loaded") == len(summary["kernels"])
    latencies = [e for e in events if e["kind"] == "kernel_latency"]
    assert latencies and all(e["latency_us_p50"] > 0 for e in latencies)
    times = [e["time"] for e in events]
    assert times == sorted(times)


def test_wandb_offline_run_file_reads_back(default_run) -> None:
    run_dir, summary, _ = default_run
    run = read_run(run_dir / "wandb")
    assert run.exit_code == 0
    assert run.config["seed"] == 0
    assert run.config["dataset"]["_target_"] == "esper.data.spirals"
    table = run.table("adaptations")
    assert table["columns"] == [
        "epoch",
        "step",
        "slot",
        "blueprint",
        "from",
        "to",
        "reason",
        "params",
        "val_before",
        "val_after",
    ]
    assert len(table["data"]) == len(summary["adaptations"])
    assert [row[5] for row in table["data"]] == [a["to"] for a in summary["adaptations"]]
    epochs = [row for row in run.history if "val/accuracy" in row]
    assert len(epochs) == 80
    assert any(k.startswith("kernel/") for row in run.history for k in row)
    for k in summary["kernels"]:
        prefix = f"kernels/{k['slot']}/{k['blueprint']}"
        assert run.summary[f"{prefix}/latency_us_p50"] == pytest.approx(k["latency_us_p50"])
        assert run.summary[f"{prefix}/latency_us_p95"] == pytest.approx(k["latency_us_p95"])
    assert run.summary["params/total"] == summary["params"]["total"]
    assert run.summary["kernel_library/compiles"] == summary["kernel_library"]["compiles"] >= 1
    assert run.summary["kernel_library/cache_hits"] == summary["kernel_library"]["cache_hits"]
    assert epochs[-1]["kernel_cache/misses"] >= 1
    assert run.summary["metrics/test_accuracy"] == pytest.approx(
        summary["metrics"]["test_accuracy"]
    )


def test_checkpoint_holds_the_morphology(default_run) -> None:
    import torch

    run_dir, summary, _ = default_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert {n: s["state"] for n, s in checkpoint["slots"].items()} == {
        n: s["state"] for n, s in summary["final_slots"].items()
    }


def test_a_wandb_run_with_seeds_exits_without_warnings(tmp_path: Path) -> None:
    """Adversarial case D2: logging the adaptations table left a ResourceWarning on every exit."""
    import subprocess
    import sys

    from tests.conftest import ROOT, own_env

    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "default",
            str(ROOT / "run.py"),
            "policy=random",
            "policy.germinate_probability=1.0",
            "trainer.max_epochs=6",
            "trainer.progress=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        env=own_env(ESPER_KERNEL_STORE=str(tmp_path / "k")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["adaptations"], "seeds were germinated, so the table has rows"
    assert "Warning" not in result.stderr, result.stderr[-2000:]
    assert len(read_run(tmp_path / "run" / "wandb").table("adaptations")["data"]) == len(
        summary["adaptations"]
    )
