"""Adversarial pass on `python -m esper.report`: damaged run files, a group whose first run lost
its configuration, configurations the paired table cannot pair, one seed, the same runs named
twice, and malformed arguments. Each gives one line that names what was wrong and what became
of it, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from esper.report import load_runs, table
from esper.report.__main__ import main
from esper.report.paired import paired_rows
from tests.conftest import ROOT, own_env
from tests.unit.test_report_paired import sweep, write_run

GNN_ROW = "| 3 | +0.0100 (+0.0100 to +0.0100) | -100 (-100 to -100) | 3 of 3 seeds"


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, list[str]]:
    """The report's output and its stderr lines, less the note on `sweep`'s static model,
    whose task the reference never ran (test_report_paired.py asserts it)."""
    main([*args, "--no-html"])
    captured = capsys.readouterr()
    unpaired = "policy=none model.hidden=[44, 44]: random did not run its task; not paired"
    return captured.out, [line for line in captured.err.splitlines() if unpaired not in line]


def exit_code(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int | str | None, str]:
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--no-html"])
    return stopped.value.code, capsys.readouterr().err.splitlines()[-1]


def test_undecodable_and_non_object_event_lines_are_ignored_and_named(tmp_path, capsys) -> None:
    """Adversarial pass: invalid UTF-8 in events.jsonl raised UnicodeDecodeError (decoding
    happened outside the per-line try), a `null` or `[1,2]` line raised AttributeError."""
    sweep(tmp_path)
    with (tmp_path / "gnn-8-None-1" / "events.jsonl").open("ab") as handle:
        handle.write(b"\xff\xfe\x00garbage\n")
    with (tmp_path / "random-8-None-2" / "events.jsonl").open("a") as handle:
        handle.write('null\n[1, 2]\n{"kind": "run_started", "config": null}\n')
    result = subprocess.run(
        [sys.executable, "-m", "esper.report", str(tmp_path), "--no-html", "--against", "random"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=own_env(),
        timeout=120,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    err = result.stderr.splitlines()
    assert len(err) == 5 and err[4].endswith("random did not run its task; not paired"), err
    assert "gnn-8-None-1: events.jsonl line 2 unreadable" in err[0] and "ignored" in err[0]
    assert "random-8-None-2: events.jsonl line 2 unreadable (null is not a JSON object)" in err[1]
    assert "random-8-None-2: events.jsonl line 3 unreadable ([1, 2] is not a JSON object)" in err[2]
    assert "random-8-None-2: events.jsonl line 4 unreadable" in err[3]
    assert GNN_ROW in result.stdout


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda s: {"status": "completed"}, "seed"),
        (lambda s: {**s, "metrics": {**s["metrics"], "test_accuracy": None}}, "test_accuracy"),
        (lambda s: {**s, "choices": None}, "choices"),
        (lambda s: {**s, "params": [1, 2]}, "params"),
        (lambda s: {**s, "config_hash": ["x"]}, "config_hash"),
        # a NaN or infinity made the table's standard deviation raise, a null latency the figure
        (lambda s: {**s, "metrics": {**s["metrics"], "test_accuracy": float("nan")}}, "finite"),
        (lambda s: {**s, "train_flops": float("inf")}, "train_flops is not a finite number"),
        (lambda s: {**s, "kernels": [{"blueprint": "x", "latency_us_p50": None}]}, "kernels"),
    ],
)
def test_a_summary_that_is_no_run_record_is_left_out_and_named(tmp_path, capsys, change, why):
    """Adversarial pass: valid JSON that is not a run record (no seed, a null accuracy, null
    choices) raised KeyError or TypeError while the table was computed."""
    sweep(tmp_path)
    path = tmp_path / "gnn-8-None-1" / "summary.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    out, err = report(capsys, str(tmp_path), "--against", "random")
    assert len(err) == 1 and "gnn-8-None-1: unreadable summary.json" in err[0], err
    assert why in err[0] and err[0].endswith("left out")
    assert "| policy=gnn model.hidden=[8, 8] | 0,2 |" in out
    assert "| 2 | +0.0100 (+0.0100 to +0.0100) |" in out


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_group_takes_its_configuration_from_another_run(tmp_path, capsys, damage) -> None:
    """Adversarial pass: a group's configuration was read from its first run only; with that
    run's events.jsonl missing or its first line truncated, the gnn row left the paired table
    silently (another task than random's)."""
    sweep(tmp_path)
    events = tmp_path / "gnn-8-None-0" / "events.jsonl"
    if damage == "missing":
        events.unlink()
    else:
        events.write_text(events.read_text()[:30] + "\n")
    out, err = report(capsys, str(tmp_path), "--against", "random")
    assert GNN_ROW in out
    assert err[-1].endswith(
        "gnn-8-None-0: no configuration (events.jsonl missing, or no readable run_started "
        "line): the other runs of its config hash give it, if one has it"
    )


def test_a_group_no_run_of_which_has_its_configuration_is_dropped_in_one_line(
    tmp_path, capsys
) -> None:
    sweep(tmp_path)
    for seed in range(3):
        write_run(tmp_path, "heuristic", [8, 8], seed, 0.5)
        (tmp_path / f"gnn-8-None-{seed}" / "events.jsonl").unlink()
    out, err = report(capsys, str(tmp_path), "--against", "random")
    assert "| policy=gnn | 0,1,2 |" in out, "the results table keeps it"
    assert (
        "| policy=heuristic model.hidden=[8, 8] | 3 |" in out
        and "| policy=gnn |" not in (out.split("Against")[1])
    )
    assert err[-1] == (
        "esper.report: policy=gnn: no run of it has its configuration (events.jsonl missing "
        "or unreadable); not paired"
    )


def test_a_configuration_without_a_seed_in_common_is_named(tmp_path, capsys) -> None:
    """Adversarial pass: a heuristic run on seed 7 beside random on seeds 0..2 vanished from
    the paired table; against the heuristic, an empty table exited 0."""
    sweep(tmp_path)
    write_run(tmp_path, "heuristic", [8, 8], 7, 0.7)
    out, err = report(capsys, str(tmp_path), "--against", "random")
    assert GNN_ROW in out and "| policy=heuristic model.hidden=[8, 8] | 7 |" in out
    assert err == [
        "esper.report: policy=heuristic model.hidden=[8, 8]: no seed in common with random; not paired"
    ]
    code, last = exit_code(capsys, str(tmp_path), "--against", "heuristic")
    assert code == 2
    assert "--against 'heuristic': no configuration shares a task and a seed with it" in last


def test_one_seed_has_no_interval(tmp_path) -> None:
    """Adversarial pass: one seed printed `+0.0000 (+0.0000 to +0.0000)`, an interval nobody
    measured."""
    write_run(tmp_path, "random", [8, 8], 0, 0.80, added=300)
    write_run(tmp_path, "gnn", [8, 8], 0, 0.81, added=200)
    (_, seeds, accuracy, params, _) = paired_rows(load_runs([tmp_path]), "random")[0]
    assert (seeds, accuracy, params) == ("1", "+0.0100 (one seed)", "-100 (one seed)")


def test_the_same_runs_named_twice_count_once(tmp_path, capsys) -> None:
    """Adversarial pass: a sweep and a copy of it counted every seed twice (`6 seeds`,
    `0,1,2,0,1,2`), narrowing the spread with no new measurement."""
    sweep(tmp_path / "sweep")
    shutil.copytree(tmp_path / "sweep", tmp_path / "copy")
    out, err = report(
        capsys, str(tmp_path / "sweep"), str(tmp_path / "copy"), "--against", "random"
    )
    assert "| policy=gnn model.hidden=[8, 8] | 0,1,2 |" in out and GNN_ROW in out
    assert len(err) == 9, "one line a duplicate"
    assert err[0] == (
        f"esper.report: {tmp_path / 'sweep' / 'gnn-8-None-0'}: the same configuration "
        f"(gnn-[8, 8]-N) and seed (0) as {tmp_path / 'copy' / 'gnn-8-None-0'}: a duplicate, "
        "left out (that one is kept)"
    )


def test_a_completed_duplicate_is_kept_over_a_failed_one(tmp_path, capsys) -> None:
    """A job that failed and was run again: the completed run is the one that counts."""
    write_run(tmp_path / "a", "random", [8, 8], 0, 0.8)
    write_run(tmp_path / "b", "random", [8, 8], 0, 0.9)
    path = tmp_path / "a" / "random-8-None-0" / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "failed"}))
    runs = load_runs([tmp_path])
    assert [(r["status"], r["metrics"]["test_accuracy"]) for r in runs] == [("completed", 0.9)]
    assert "| 0 | 0.9000 (one seed) |" in table(runs)
    assert "a/random-8-None-0: the same configuration" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("against", "message"),
    [
        ("", "--against: name a policy"),
        ("random policy.nokey", "'policy.nokey' is not KEY=VALUE"),
        ("random =1", "'=1' is not KEY=VALUE"),
        ("random policy.x=[", "'policy.x=[': the value is not YAML"),
        ("random policy.sed=0", "no run of random has policy.sed in its configuration"),
    ],
)
def test_a_malformed_reference_is_named(tmp_path, capsys, against, message) -> None:
    sweep(tmp_path)
    code, last = exit_code(capsys, str(tmp_path), "--against", against)
    assert code == 2 and message in last


def test_an_empty_directory_or_a_file_is_a_usage_error(tmp_path, capsys) -> None:
    """Adversarial pass: both exited 1; a missing directory exits 2 with one line."""
    (tmp_path / "empty").mkdir()
    code, last = exit_code(capsys, str(tmp_path / "empty"))
    assert code == 2 and f"no readable summary.json under {tmp_path / 'empty'}" in last
    (tmp_path / "notes.txt").write_text("x")
    code, last = exit_code(capsys, str(tmp_path / "notes.txt"))
    assert code == 2 and f"{tmp_path / 'notes.txt'}: not a directory" in last


def test_runs_differing_in_a_seed_the_hash_leaves_out_are_not_duplicates(tmp_path) -> None:
    """Adversarial pass: `policy.seed=0,1,2` (or `dataset.loader_seed`) at `seed=0` share the
    config hash and the seed, yet are three measurements; deduplication kept one of them."""
    for policy_seed in (0, 1, 2):
        write_run(tmp_path / f"p{policy_seed}", "random", [8, 8], 0, 0.6 + policy_seed / 100)
        path = tmp_path / f"p{policy_seed}" / "random-8-None-0" / "events.jsonl"
        event = json.loads(path.read_text())
        event["config"]["policy"]["seed"] = policy_seed
        path.write_text(json.dumps(event) + "\n")
    assert len(load_runs([tmp_path])) == 3


def test_events_the_figures_cannot_read_are_ignored_and_named(tmp_path, capsys) -> None:
    """Adversarial pass: an adaptation without `to` raised KeyError in the HTML report's
    figures, a non-numeric val accuracy a TypeError; both lines are now left out, named."""
    sweep(tmp_path)
    good = {"kind": "epoch_ended", "epoch": 0, "step": 5, "metrics": {"val/accuracy": 0.5}}
    lines = [
        good,
        {"kind": "adaptation", "epoch": 0, "slot": "blocks.0", "from": "DORMANT", "to": "x"},
        {"kind": "adaptation", "epoch": 0, "slot": "blocks.0", "from": "DORMANT"},
        {"kind": "epoch_ended", "epoch": 1, "step": 9, "metrics": {"val/accuracy": "high"}},
        {"kind": "epoch_ended", "epoch": "2", "step": 9, "metrics": {}},
    ]
    with (tmp_path / "gnn-8-None-1" / "events.jsonl").open("a") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    main([str(tmp_path), "--out", str(tmp_path / "html")])
    err = capsys.readouterr().err.splitlines()
    assert [line.split("unreadable (")[1] for line in err if "unreadable" in line] == [
        "adaptation: its from or to is not a seed state): ignored",
        "adaptation: its from or to is not a seed state): ignored",
        "epoch_ended: its metrics are not all numbers): ignored",
        "epoch_ended: its epoch or step is not an integer): ignored",
    ]
    assert (tmp_path / "html" / "report.html").is_file()
    (run,) = [r for r in load_runs([tmp_path]) if r["run_dir"].endswith("gnn-8-None-1")]
    assert run["history"] == [{"val/accuracy": 0.5, "epoch": 0, "step": 5}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("",), "an empty target"),  # it reported on the current directory
        (("{dir}", "--metric", "val_accuracy"), "--metric val_accuracy: it is what --against"),
    ],
)
def test_an_argument_that_would_be_ignored_is_refused(tmp_path, capsys, args, message) -> None:
    sweep(tmp_path)
    code, last = exit_code(capsys, *(a.format(dir=tmp_path) for a in args))
    assert code == 2 and message in last, last


def test_a_refused_reference_prints_no_half_report(tmp_path, capsys) -> None:
    """The results table was printed before --against was refused."""
    sweep(tmp_path)
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--no-html", "--against", "heuristic"])
    assert capsys.readouterr().out == ""


def test_a_sweep_still_running_says_how_many_jobs_have_finished(tmp_path, capsys) -> None:
    """helper-found: a report of a sweep under way read as a whole one (`0.7875 (one seed)`),
    its jobs not yet started unsaid, and a running job was said to be `killed?`."""
    import os
    import time

    write_run(tmp_path, "random", [8, 8], 0, 0.8)
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n"
        "  sweeper:\n"
        "    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
        "    params:\n"
        "      trainer.max_epochs: 3,4\n"
        "  overrides:\n"
        "    task:\n"
        "    - seed=0,1,2\n"
        "    - policy=random\n"
        "    - trainer.max_epochs=5\n"  # replaces the params' 3,4: 3 jobs, not 6
    )
    running, killed, refused = tmp_path / "running", tmp_path / "killed", tmp_path / "refused"
    for job in (running, killed):
        job.mkdir()
        (job / "events.jsonl").write_text("")
    refused.mkdir()
    (refused / "run.log").write_text(
        "[2026-12-08 00:16:02,592][esper.run][ERROR] - esper: invalid configuration:\n"
        "  trainer.max_epochs=-3: Input should be greater than or equal to 1\n"
    )
    long_ago = time.time() - 3600
    os.utime(killed / "events.jsonl", (long_ago, long_ago))
    _, said = report(capsys, str(tmp_path))
    assert (
        f"esper.report: {tmp_path}: 1 of its 3 jobs have a summary.json (the others have not "
        "started, are running, were refused or were stopped)" in said
    ), said
    assert (
        f"esper.report: {refused}: no run: the job was refused (esper: invalid configuration: "
        "trainer.max_epochs=-3: Input should be greater than or equal to 1)" in said
    ), said
    assert any(
        line.startswith(f"esper.report: {running}: no summary.json yet (events.jsonl written ")
        and line.endswith(" s ago: still running?)")
        for line in said
    ), said
    assert f"esper.report: {killed}: no summary.json (the job did not finish: killed?)" in said
