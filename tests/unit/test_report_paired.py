"""`python -m esper.report DIRS --against random`: each policy against a reference policy, seed
by seed, on the runs' own summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esper.report import load_runs
from esper.report.__main__ import main
from esper.report.paired import paired_rows
from esper.report.table import rows


def write_run(
    root: Path,
    policy: str,
    hidden: list[int],
    seed: int,
    acc: float,
    added: int = 0,
    patience: int | None = None,
    val: float | None = None,
) -> None:
    run = root / f"{policy}-{hidden[0]}-{patience}-{seed}"
    run.mkdir(parents=True)
    config = {
        "seed": seed,
        "model": {"_target_": "esper.models.MLP", "hidden": hidden},
        "policy": {"_target_": f"esper.policy.{policy}", "seed": seed},
    }
    if patience is not None:
        config["policy"]["patience"] = patience
    events = {"kind": "run_started", "config": config, "choices": {"policy": policy}}
    (run / "events.jsonl").write_text(json.dumps(events) + "\n")
    summary = {
        "status": "completed",
        "seed": seed,
        "config_hash": f"{policy}-{hidden}-{patience}",
        "choices": {"policy": policy, "model": "mlp"},
        "metrics": {"test_accuracy": acc, "val_accuracy": acc if val is None else val},
        "params": {"total": 100 * hidden[0] + added, "seeds": added},
        "flops_per_sample": {"total": 10},
        "train_flops": 1000,
    }
    (run / "summary.json").write_text(json.dumps(summary))


def sweep(root: Path) -> None:
    """Seeds far apart (0.60, 0.80, 0.90); `gnn` 0.01 above random on each with 100 parameters
    fewer; a static [44, 44] model that random never ran on."""
    for seed, level in enumerate((0.60, 0.80, 0.90)):
        write_run(root, "random", [8, 8], seed, level, added=300)
        write_run(root, "gnn", [8, 8], seed, level + 0.01, added=200)
        write_run(root, "none", [44, 44], seed, 0.95)


def test_pairs_by_seed_so_a_small_steady_gain_shows_through_large_seed_spread(
    tmp_path, capsys
) -> None:
    sweep(tmp_path)
    rows = paired_rows(load_runs([tmp_path]), "random")
    assert len(rows) == 1, "the static [44, 44] has no random run on its task: left out"
    (note,) = capsys.readouterr().err.strip().splitlines()  # helper-found: without a word
    assert "44" in note and note.endswith(": random did not run its task; not paired"), note
    label, seeds, accuracy, params, wins = rows[0]
    assert "gnn" in label and seeds == "3"
    assert accuracy == "+0.0100 (+0.0100 to +0.0100)"
    assert params == "-100 (-100 to -100)"
    assert wins == "3 of 3 seeds (0 tied)"


def test_the_interval_spans_zero_when_the_sign_changes_between_seeds(tmp_path) -> None:
    for seed, delta in enumerate((0.02, -0.02, 0.02, -0.02)):
        write_run(tmp_path, "random", [8, 8], seed, 0.8)
        write_run(tmp_path, "gnn", [8, 8], seed, 0.8 + delta)
    (_, _, accuracy, _, wins) = paired_rows(load_runs([tmp_path]), "random")[0]
    low, high = (float(x) for x in accuracy.split("(")[1].rstrip(")").split(" to "))
    assert low < 0 < high
    assert wins == "2 of 4 seeds (0 tied)"


def test_a_reference_nobody_ran_is_named(tmp_path, capsys) -> None:
    sweep(tmp_path)
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--no-html", "--against", "heuristic"])
    err = capsys.readouterr().err
    assert "--against 'heuristic'" in err and "'gnn', 'none', 'random'" in err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--no-html", "--against", " "])
    assert "--against: name a policy" in capsys.readouterr().err


def test_settings_pick_one_of_several_runs_of_the_reference_policy(tmp_path) -> None:
    """Two heuristics on one task (the default and one germinating early) are told apart by
    their settings; the policy name alone is ambiguous and named."""
    for seed in (0, 1):
        write_run(tmp_path, "random", [8, 8], seed, 0.80, added=300)
        write_run(tmp_path, "heuristic", [8, 8], seed, 0.70, patience=3)
        write_run(tmp_path, "heuristic", [8, 8], seed, 0.90, added=900, patience=1)
    runs = load_runs([tmp_path])
    with pytest.raises(ValueError, match="matches 2 configurations of one task"):
        paired_rows(runs, "heuristic")
    rows = paired_rows(runs, "heuristic policy.patience=1")
    alone = [r for r in runs if r["config"]["policy"].get("patience") != 3]
    assert len(paired_rows(alone, "heuristic policy.patience=1")) == 1, (
        "one heuristic left: its label omits patience, the configuration still matches"
    )
    assert [(r[0].split("policy=")[1], r[2]) for r in rows] == [
        ("heuristic policy.patience=3", "-0.2000 (-0.2000 to -0.2000)"),
        ("random", "-0.1000 (-0.1000 to -0.1000)"),
    ]


def test_the_cli_prints_the_paired_table_after_the_results_table(tmp_path, capsys) -> None:
    sweep(tmp_path)
    main([str(tmp_path), "--no-html", "--against", "random"])
    out = capsys.readouterr().out
    assert out.index("| configuration | seeds | test accuracy |") < out.index("Against `random`")
    assert "| +0.0100 (+0.0100 to +0.0100) | -100 (-100 to -100) | 3 of 3 seeds (0 tied) |" in out


def test_validation_can_be_compared_without_the_test_column(tmp_path, capsys) -> None:
    """Choosing between candidates looks at validation only: --metric val_accuracy."""
    for seed in (0, 1):
        write_run(tmp_path, "random", [8, 8], seed, 0.80)
        write_run(tmp_path, "gnn", [8, 8], seed, 0.85, val=0.70)
    main([str(tmp_path), "--no-html", "--against", "random", "--metric", "val_accuracy"])
    paired = capsys.readouterr().out.split("Against `random`")[1]
    assert "val accuracy − reference" in paired and "test accuracy" not in paired
    assert "| -0.1000 (-0.1000 to -0.1000) |" in paired


def test_two_reference_runs_of_one_seed_pair_with_their_mean_and_are_named(
    tmp_path, capsys
) -> None:
    """Runs that differ only in policy.seed are one configuration: the last run of a seed
    replaced the others in the pairing, without a word."""
    write_run(tmp_path / "a", "random", [8, 8], 0, 0.80, added=300)
    write_run(tmp_path / "b", "random", [8, 8], 0, 0.90, added=100)
    events = tmp_path / "b" / "random-8-None-0" / "events.jsonl"
    events.write_text(events.read_text().replace('"seed": 0}', '"seed": 7}'))  # policy.seed=7
    for seed, acc in ((0, 0.86), (1, 0.80)):
        write_run(tmp_path / "a", "gnn", [8, 8], seed, acc, added=200)
    write_run(tmp_path / "a", "random", [8, 8], 1, 0.80, added=200)
    [(_, seeds, accuracy, params, _)] = paired_rows(
        load_runs([tmp_path / "a", tmp_path / "b"]), "random"
    )
    assert (seeds, accuracy, params) == ("2", "+0.0050 (+0.0000 to +0.0100)", "+0 (+0 to +0)")
    assert "more than one run of seed 0; each is paired with their mean" in capsys.readouterr().err


def test_a_row_names_its_runs_that_did_not_complete(tmp_path) -> None:
    """An interrupted seed beside a completed one vanished from the row without a word (a row
    with no completed run said "0 of N completed")."""
    for seed in (0, 1):
        write_run(tmp_path, "random", [8, 8], seed, 0.8)
    summary = tmp_path / "random-8-None-0" / "summary.json"
    summary.write_text(summary.read_text().replace('"completed"', '"interrupted"', 1))
    [row] = rows(load_runs([tmp_path]))
    assert row[1] == "1 (left out: 0 interrupted)"


@pytest.mark.parametrize("value", ["3", "3.0", "3e0"])
def test_a_reference_setting_matches_as_a_number(tmp_path, value: str) -> None:
    """`policy.patience=3.0` matched no run of patience 3 (compared as text)."""
    for seed in (0, 1):
        write_run(tmp_path, "heuristic", [8, 8], seed, 0.8, patience=3)
        write_run(tmp_path, "gnn", [8, 8], seed, 0.81)
    [row] = paired_rows(load_runs([tmp_path]), f"heuristic policy.patience={value}")
    assert row[1] == "2"


def test_a_reference_copied_from_the_table_keeps_its_list_whole(tmp_path) -> None:
    """`none model.hidden=[12, 12]` (a label as the table prints it) was split at the space and
    refused as not YAML."""
    for hidden in ([8, 8], [12, 12]):
        for seed in (0, 1):
            write_run(tmp_path, "none", hidden, seed, 0.8)
            write_run(tmp_path, "gnn", hidden, seed, 0.81)
    assert len(paired_rows(load_runs([tmp_path]), "none")) == 2
    [row] = paired_rows(load_runs([tmp_path]), "none model.hidden=[12, 12]")
    assert row[1] == "2"


def test_a_sweep_with_no_completed_run_draws_its_figure_without_a_warning(tmp_path) -> None:
    """matplotlib warned "No artists with labels found to put in legend" on stderr."""
    import warnings

    from esper.report.figures import accuracy_vs_params

    write_run(tmp_path, "random", [8, 8], 0, 0.8)
    summary = tmp_path / "random-8-None-0" / "summary.json"
    summary.write_text(summary.read_text().replace('"completed"', '"interrupted"', 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accuracy_vs_params(load_runs([tmp_path]), tmp_path / "accuracy.png")
    assert (tmp_path / "accuracy.png").stat().st_size > 0
