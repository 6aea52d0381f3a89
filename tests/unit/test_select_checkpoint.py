"""The validation score that chooses a shipped checkpoint (experiments/select_checkpoint.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[2] / "experiments" / "select_checkpoint.py"


@pytest.fixture(scope="module")
def select():
    spec = importlib.util.spec_from_file_location("select_checkpoint", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_candidate_better_and_leaner_on_every_seed_always_clears_the_bar(select):
    rng = np.random.default_rng(0)
    val, rval = np.full(10, 0.9), np.full(10, 0.8)
    params, rparams = np.zeros(10), np.full(10, 100.0)
    assert select.chance_of_bar(val, params, rval, rparams, rng) == 1.0
    assert list(select.chance_range([(val, params, rval, rparams)], rng)) == [1.0, 1.0]


def test_a_candidate_less_accurate_on_every_seed_never_clears_it(select):
    rng = np.random.default_rng(0)
    val, rval = np.full(10, 0.7), np.full(10, 0.8)
    assert select.chance_of_bar(val, np.zeros(10), rval, np.full(10, 100.0), rng) == 0.0


def test_heavy_tailed_random_parameters_make_the_parameter_half_a_lottery(select):
    """Random adds nothing on six seeds of ten and 2,000 on four; a candidate adding 300 on
    every seed clears the parameter half only when a five-seed draw holds a 2,000: 1 - 0.6^5."""
    rng = np.random.default_rng(0)
    rparams = np.array([0.0] * 6 + [2000.0] * 4)
    chance = select.chance_of_bar(
        np.full(10, 0.9), np.full(10, 300.0), np.full(10, 0.8), rparams, rng
    )
    assert chance == pytest.approx(1 - 0.6**5, abs=0.02)


def test_seeds_are_paired_between_candidate_and_random(select):
    """A candidate 0.01 above random on each seed, while seeds differ by far more, clears the
    accuracy half on every draw: the same seeds are drawn for both."""
    rng = np.random.default_rng(0)
    rval = np.linspace(0.5, 0.9, 10)
    chance = select.chance_of_bar(rval + 0.01, np.zeros(10), rval, np.zeros(10), rng)
    assert chance == 1.0


def test_a_candidate_is_named_by_its_checkpoint_and_its_non_default_settings(select, tmp_path):
    """One sweep scores inference settings beside checkpoints (GNN="policy.greedy=false,true"):
    a setting given at its default value does not split a candidate in two."""
    (tmp_path / ".hydra").mkdir()
    overrides = ["policy=gnn", "policy.greedy=true", "policy.max_seeds=null", "seed=3"]
    (tmp_path / ".hydra" / "overrides.yaml").write_text("\n".join(f"- {o}" for o in overrides))
    policy = {"checkpoint": "/x/update_30.pt", "greedy": True, "max_seeds": None}
    run = {"choices": {"policy": "gnn"}, "config": {"policy": policy}, "run_dir": str(tmp_path)}
    assert select.candidate_name(run) == "update_30.pt greedy=true"
    run["choices"]["policy"] = "random"
    assert select.candidate_name(run) == "random"


def test_two_trainings_policy_pt_are_two_candidates(select, tmp_path, capsys):
    """Adversarial pass: `policy.checkpoint=A/policy.pt,B/policy.pt` made one candidate
    `policy.pt` (B's runs overwrote A's seed by seed); a run without its configuration was a
    KeyError traceback."""
    for name, checkpoint, acc in (("a", "A/policy.pt", 0.9), ("b", "B/policy.pt", 0.8)):
        for seed in (50, 51):
            write(tmp_path / f"{name}{seed}", "gnn", seed, acc, {"checkpoint": checkpoint})
    for seed in (50, 51):
        write(tmp_path / f"r{seed}", "random", seed, 0.7, {})
    (tmp_path / "b51" / "events.jsonl").unlink()  # its configuration is lost
    select.main(tmp_path)
    out, err = capsys.readouterr()
    assert "| A/policy.pt |" in out and "| B/policy.pt |" in out
    assert "b51: left out" in err


def write(run: Path, choice: str, seed: int, acc: float, policy: dict) -> None:
    run.mkdir(parents=True)
    config = {
        "seed": seed,
        "model": {"hidden": [8, 8]},
        "policy": {"_target_": choice, **policy},
    }
    (run / "events.jsonl").write_text(json.dumps({"kind": "run_started", "config": config}) + "\n")
    summary = {
        "status": "completed",
        "seed": seed,
        "config_hash": f"{choice}-{policy.get('checkpoint')}",
        "choices": {"policy": choice, "dataset": "spirals", "model": "mlp"},
        "metrics": {"test_accuracy": acc, "val_accuracy": acc},
        "params": {"total": 100, "seeds": 10},
        "flops_per_sample": {"total": 10},
        "train_flops": 1000,
    }
    (run / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ([], "usage: experiments/select_checkpoint.sh CKPT [CKPT ...]"),
        (["outputs/no-such.pt"], "experiments/select_checkpoint.sh: outputs/no-such.pt: no such"),
    ],
)
def test_the_selection_script_refuses_no_or_missing_checkpoints_before_any_run(
    arguments, said
) -> None:
    """helper-found: with no checkpoint the script ran the whole random sweep (minutes) before
    `policy.checkpoint=''` failed in every job."""
    import subprocess

    result = subprocess.run(
        ["bash", str(SCRIPT.with_suffix(".sh")), *arguments], capture_output=True, text=True
    )
    assert result.returncode == 2 and said in result.stderr and result.stdout == ""


def test_the_selection_script_reads_checkpoints_from_where_it_is_called(tmp_path) -> None:
    """helper-found: a path relative to the caller's directory was looked up from the
    repository's root, and an existing checkpoint refused."""
    import subprocess

    (tmp_path / "update_1.pt").write_bytes(b"")
    result = subprocess.run(
        ["bash", str(SCRIPT.with_suffix(".sh")), "update_1.pt"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PY": "echo"},  # prints each command instead of running it
    )
    assert result.returncode == 0, result.stderr
    assert f"policy.checkpoint={tmp_path / 'update_1.pt'}" in result.stdout
