"""Every key of the metric schema (esper.events.schema) reaches W&B: a real `python run.py`
with the GNN policy, its offline run file read back, each key found with a plausible value."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from esper.events.schema import SCHEMA, STATE_CODES, documented
from esper.events.wandb_file import read_run
from tests.conftest import run_cli

TABLES = {m.key for m in SCHEMA if m.when == "table"}


@pytest.fixture(scope="module")
def gnn_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("schema")
    run_dir = root / "run"
    result = run_cli(
        f"hydra.run.dir={run_dir}",
        "policy=gnn",
        "trainer.max_epochs=14",
        "blueprints=vector",
        "trainer.progress=false",
        cwd=root,
        env={"ESPER_KERNEL_STORE": str(root / "kernels")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def test_every_schema_key_is_logged_with_a_plausible_value(gnn_run) -> None:
    run_dir, summary = gnn_run
    assert summary["kernels"], "the run attached kernels, so kernel/* keys exist"
    run = read_run(run_dir / "wandb")
    logged: dict[str, list] = {}
    for row in run.history:
        for key, value in row.items():
            if not key.startswith("_") and key.split("/")[0] not in TABLES:
                logged.setdefault(key, []).append(value)
    for metric in SCHEMA:
        if metric.key in TABLES:
            continue
        found = [k for k in logged if metric.matches(k)]
        assert found, f"{metric.key} was never logged"
        for key in found:
            values = logged[key]
            assert all(isinstance(v, int | float) and math.isfinite(v) for v in values), key
    undocumented = sorted(k for k in logged if not documented(k))
    assert not undocumented, f"logged but not in the schema: {undocumented}"

    epochs = [row for row in run.history if "val/accuracy" in row]
    assert len(epochs) == 14
    assert all(0 <= r["val/accuracy"] <= 1 and r["train/loss"] > 0 for r in epochs)
    assert [r["epoch"] for r in epochs] == list(range(14))
    assert logged["test/accuracy"] == [pytest.approx(summary["metrics"]["test_accuracy"])]
    assert logged["params/total"][-1] == summary["params"]["total"]
    assert logged["flops/forward_total"] == [summary["flops_per_sample"]["total"]]
    codes = set(STATE_CODES.values())
    for slot in summary["final_slots"]:
        states = logged[f"seeds/{slot}/state"]
        assert set(states) <= codes and len(states) == 14
        assert all(0.0 <= a <= 1.0 for a in logged[f"seeds/{slot}/alpha"])
    ops = [k for k in logged if k.startswith("policy/p/")]
    assert len(ops) == 5 and all(0 <= p <= 1 for k in ops for p in logged[k])
    for i in range(len(logged["policy/entropy"])):
        assert sum(logged[k][i] for k in ops) == pytest.approx(1.0, abs=1e-5)
    assert all(0 <= h <= math.log(5) + 1e-6 for h in logged["policy/entropy"])
    blueprints = {k["blueprint"] for k in summary["kernels"]}
    for blueprint in blueprints:
        assert logged[f"kernel/{blueprint}/latency_us_p50"][0] > 0


def test_tables_summary_config_and_grouping(gnn_run) -> None:
    run_dir, summary = gnn_run
    run = read_run(run_dir / "wandb")
    adaptations = run.table("adaptations")
    assert len(adaptations["data"]) == len(summary["adaptations"]) > 0
    columns = adaptations["columns"]
    for row, want in zip(adaptations["data"], summary["adaptations"]):
        got = dict(zip(columns, row))
        assert (got["epoch"], got["slot"], got["to"]) == (want["epoch"], want["slot"], want["to"])
        assert 0 <= got["val_before"] <= 1
        assert got["val_after"] is None or 0 <= got["val_after"] <= 1
        assert got["params"] >= 0
    grown = [dict(zip(columns, r)) for r in adaptations["data"] if r[5] == "TRAINING"]
    assert all(g["params"] > 0 for g in grown), "a training seed has its kernel's parameters"

    timeline = run.table("seed_timeline")
    rows = [dict(zip(timeline["columns"], r)) for r in timeline["data"]]
    for slot, final in summary["final_slots"].items():
        mine = [r for r in rows if r["slot"] == slot]
        assert mine[0]["state"] == "DORMANT" and mine[0]["start_epoch"] == 0
        assert mine[-1]["state"] == final["state"] and mine[-1]["end_epoch"] == 14
        for before, after in zip(mine, mine[1:]):
            assert before["end_epoch"] == after["start_epoch"]
    decisions = run.table("decisions")
    column = decisions["columns"].index("probabilities")
    sampled = [row for row in decisions["data"] if json.loads(row[column])]
    assert len(sampled) == 14, "one sampled gnn decision a control step"
    # the shipped policy decides germination; its seeds advance on schedule, logged alike
    scheduled = [row for row in decisions["data"] if not json.loads(row[column])]
    assert {row[decisions["columns"].index("action")] for row in scheduled} <= {
        "advance",
        "fossilize",
        "cull",
    }

    for key in ("status", "config_hash", "seed", "epochs", "train_flops"):
        assert run.summary[key] == summary[key], key
    assert run.summary["metrics/test_accuracy"] == pytest.approx(
        summary["metrics"]["test_accuracy"]
    )
    assert run.summary["params/total"] == summary["params"]["total"]
    assert run.summary["choices/policy"] == "gnn"
    assert run.config["policy"]["_target_"] == "esper.policy.GnnPolicy"
    assert run.config["trainer"]["max_epochs"] == 14
    assert run.job_type == "gnn"
    assert {"dataset:spirals", "model:mlp", "policy:gnn"} <= set(run.tags)
