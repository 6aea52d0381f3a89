"""policy=gnn end to end on every kind of host: legal adaptations, every decision logged with
its probabilities (events.jsonl and W&B), deterministic for a seed, and resumable exactly."""

from __future__ import annotations

import json

import pytest

from esper.app import build
from esper.events.wandb_file import read_run

GNN = ("policy=gnn", "trainer.checkpoint=false")  # the shipped weights unless said otherwise
HOSTS = {
    "spirals_mlp": (),
    "digits_cnn": ("dataset=digits", "model=cnn"),
    "text_transformer": ("dataset=pydoc_text", "model=transformer_tiny", "blueprints=sequence"),
}


def decisions(run_dir) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == "decision_made"]


@pytest.mark.parametrize(
    "host",
    [pytest.param(h, marks=[] if h == "spirals_mlp" else [pytest.mark.slow]) for h in HOSTS],
)
def test_gnn_policy_runs_on_every_host(make_config, tmp_path, host) -> None:
    overrides = (*GNN, *HOSTS[host], "trainer.max_epochs=8", "seed=1", "policy.checkpoint=null")
    logger = () if host == "spirals_mlp" else ("logger=none",)
    record = build(make_config(*overrides, *logger, run_dir=tmp_path / "run")).run()
    assert record.status == "completed"
    assert record.policy["weights"] == "initial (seed 1), untrained"
    assert record.policy["scatter"]["choice"], "the backend choice is in the record"
    made = decisions(tmp_path / "run")
    assert len(made) == 8
    for event in made:
        (decision,) = event["decisions"]
        assert 0 < decision["probabilities"]["action"] <= 1
        assert event["observation"]["slots"], "the observation summary is logged with it"
    acted = [d for e in made for d in e["decisions"] if d["action"] != "wait"]
    assert acted, "an untrained policy still acts"
    assert len(record.adaptations) >= 1
    if host == "spirals_mlp":
        table = read_run(tmp_path / "run" / "wandb").table("decisions")
        assert len(table["data"]) == 8 and "probabilities" in table["columns"]


def test_under_the_schedule_lifecycle_the_gnn_decides_germination_alone(
    make_config, tmp_path
) -> None:
    """policy.lifecycle=schedule: the network chooses when, where and what to germinate; every
    other transition follows the schedule, and a blended seed stays only if it helped on val."""
    overrides = (
        *GNN,
        "logger=none",
        "policy.checkpoint=null",
        "policy.lifecycle=schedule",
        "trainer.max_epochs=20",  # (it ran the default 80: 19 s of the fast tier)
    )
    record = build(make_config(*overrides, "seed=1", run_dir=tmp_path / "run")).run()
    assert record.policy["lifecycle"] == "schedule"
    for event in decisions(tmp_path / "run"):
        *scheduled, own = event["decisions"]
        assert own["action"] in ("wait", "germinate")
        for op in ("advance", "fossilize", "cull"):
            assert own["probabilities"][f"op/{op}"] == 0.0
        assert all(d["action"] in ("advance", "fossilize", "cull") for d in scheduled)
    lines = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    moves = [e for e in map(json.loads, lines) if e["kind"] == "adaptation"]
    why = {"GERMINATED": "gnn:", "TRAINING": "kernel ready", "BLENDING": "incubated 3 epochs"}
    judged = 0
    for move in moves:
        if move["to"] in why:
            assert move["reason"].startswith(why[move["to"]]), move
        elif move["to"] in ("FOSSILIZED", "CULLED") and move["from"] == "BLENDING":
            judged += 1
            assert "val_accuracy contribution" in move["reason"], move
    assert judged >= 1, "a seed went through its whole lifecycle in 20 epochs"


def test_a_gnn_run_is_deterministic_and_resumes_exactly(make_config, tmp_path) -> None:
    common = (*GNN, "logger=none", "trainer.max_epochs=14", "seed=3")
    runs = [
        build(make_config(*common, run_dir=tmp_path / name)).run().model_dump(mode="json")
        for name in ("a", "b")
    ]
    for key in ("metrics", "adaptations", "params", "final_slots"):
        assert runs[0][key] == runs[1][key], key
    assert runs[0]["adaptations"], "the run grew"
    stopped = build(
        make_config(
            *common[:2],
            "logger=none",
            "trainer.max_epochs=14",
            "seed=3",
            "trainer.checkpoint=true",
            "trainer.stop_after_epoch=5",
            run_dir=tmp_path / "c",
        )
    ).run()
    assert stopped.status == "stopped"
    resumed = (
        build(
            make_config(
                *common[:2],
                "logger=none",
                "trainer.max_epochs=14",
                "seed=3",
                "trainer.checkpoint=true",
                f"trainer.resume={tmp_path / 'c'}",
                run_dir=tmp_path / "d",
            )
        )
        .run()
        .model_dump(mode="json")
    )
    for key in ("metrics", "adaptations", "params", "final_slots"):
        assert resumed[key] == runs[0][key], key
