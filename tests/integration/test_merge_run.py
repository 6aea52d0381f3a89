from __future__ import annotations

import pytest
import torch

import esper
from esper.app import build
from esper.training.steps import evaluate
from tests.conftest import KEEP_IT, ONE_EARLY_SEED


@pytest.mark.parametrize(
    ("sites", "expect"),
    [
        ("[blocks.0.0]", "merged into blocks.0.0"),
        ("[blocks.0]", "not merged (site blocks.0 is a Sequential, not a Linear)"),
    ],
)
def test_fossilized_merge_mode(make_config, tmp_path, sites: str, expect: str) -> None:
    cfg = make_config(
        *ONE_EARLY_SEED,
        *KEEP_IT,
        "seeds.gates.fossilize_min_contribution=null",
        "seeds.fossilized=merge",
        "blueprints.allowed=[low_rank]",
        f"model.sites={sites}",
        run_dir=tmp_path / "run",
    )
    summary = build(cfg).run().model_dump(mode="json")
    fossilized = [a for a in summary["adaptations"] if a["to"] == "FOSSILIZED"]
    assert len(fossilized) == 1 and expect in fossilized[0]["reason"]
    merged = expect.startswith("merged")
    assert (summary["params"]["seeds"] == 0) == merged


def test_a_run_stopped_after_a_merge_resumes_to_the_same_end(make_config, tmp_path) -> None:
    """Found by esper.load_run's test: a checkpoint taken after a merge held the slot's kernel
    id but no seed weights (the seed lives in the host), and its resume attached the kernel
    again: `Missing key(s) in state_dict: "slots.blocks__0__0.seed.0.weight"`, a traceback."""
    merging = (
        *ONE_EARLY_SEED,
        *KEEP_IT,
        "trainer.checkpoint=true",
        "seeds.gates.fossilize_min_contribution=null",
        "seeds.fossilized=merge",
        "blueprints.allowed=[low_rank]",
        "model.sites=[blocks.0.0]",
    )
    whole = build(make_config(*merging, run_dir=tmp_path / "whole")).run()
    merged_at = next(a.epoch for a in whole.adaptations if a.to_state == "FOSSILIZED")
    assert merged_at < 10 and whole.params["seeds"] == 0
    first = build(
        make_config(*merging, f"trainer.stop_after_epoch={merged_at + 1}", run_dir=tmp_path / "a")
    ).run()
    assert first.status == "stopped"
    resumed = build(
        make_config(*merging, f"trainer.resume={tmp_path / 'a'}", run_dir=tmp_path / "b")
    ).run()
    assert resumed.status == "completed"
    assert (resumed.metrics, resumed.params) == (whole.metrics, whole.params)
    loaded = esper.load_run(tmp_path / "b")  # and outside a run
    assert loaded.model.slot("blocks.0.0").merged and loaded.model.param_counts() == whole.params
    test = evaluate(loaded.model, loaded.data.test, torch.device("cpu"))
    assert (test.loss, test.accuracy) == (
        whole.metrics["test_loss"],
        whole.metrics["test_accuracy"],
    )
