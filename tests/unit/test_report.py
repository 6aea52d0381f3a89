"""The sweep table groups runs by their configuration less the seed, and labels rows by what
differs: a static wide model and the small host, both policy=none, are two rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esper.report import load_runs, table


def write_run(root: Path, name: str, hidden: list[int], policy: str, seed: int, acc: float):
    run = root / name
    run.mkdir(parents=True)
    config = {
        "seed": seed,
        "run_dir": str(run),
        "model": {"_target_": "esper.models.MLP", "hidden": hidden},
        "policy": {"_target_": f"esper.policy.{policy}", "seed": seed},
    }
    (run / "events.jsonl").write_text(json.dumps({"kind": "run_started", "config": config}) + "\n")
    summary = {
        "status": "completed",
        "seed": seed,
        "config_hash": f"{policy}-{hidden}",
        "metrics": {"test_accuracy": acc, "val_accuracy": acc},
        "params": {"total": 100 * hidden[0], "seeds": 0},
        "flops_per_sample": {"total": 10 * hidden[0]},
        "train_flops": 1000 * hidden[0],
    }
    (run / "summary.json").write_text(json.dumps(summary))


def test_static_wide_and_small_host_are_separate_rows(tmp_path) -> None:
    for seed in (0, 1):
        write_run(tmp_path, f"small{seed}", [8, 8], "NoPolicy", seed, 0.70 + seed / 100)
        write_run(tmp_path, f"wide{seed}", [44, 44], "NoPolicy", seed, 0.90 + seed / 100)
        write_run(tmp_path, f"grown{seed}", [8, 8], "HeuristicPolicy", seed, 0.88)
    lines = table(load_runs([tmp_path])).splitlines()
    rows = [line for line in lines[2:]]
    assert len(rows) == 3
    small = next(r for r in rows if "model.hidden=[8, 8]" in r and "NoPolicy" in r)
    wide = next(r for r in rows if "model.hidden=[44, 44]" in r)
    assert "| 0,1 | 0.7050 ± 0.0071 |" in small
    assert "| 0.9050 ± 0.0071 |" in wide and "| 4,400 |" in wide
    assert all("seed" not in r.split("|")[1] for r in rows), "the seed never labels a row"


def test_one_seed_shows_no_spread(tmp_path) -> None:
    """Adversarial pass: a single seed printed `± 0.0000`, a spread nobody measured."""
    write_run(tmp_path, "only", [8, 8], "NoPolicy", 0, 0.7)
    row = table(load_runs([tmp_path])).splitlines()[2]
    assert "| 0 | 0.7000 (one seed) |" in row and "±" not in row


def test_bad_runs_are_named_and_left_out_and_no_run_counts_twice(tmp_path, capsys) -> None:
    """Adversarial pass: one unreadable summary.json stopped the whole report with a
    traceback, a killed job vanished silently, and naming a run twice counted it twice."""
    for seed in (0, 1):
        write_run(tmp_path, f"good{seed}", [8, 8], "NoPolicy", seed, 0.7)
    for name, text in (("truncated", '{"status": "compl'), ("list", "[1, 2]"), ("empty", "")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(text)
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "events.jsonl").write_text('{"kind": "run_started"}\n')
    with (tmp_path / "good0" / "events.jsonl").open("a") as handle:
        handle.write("not json\n")
    runs = load_runs([tmp_path, tmp_path / "good0"])
    assert sorted(r["seed"] for r in runs) == [0, 1]
    err = capsys.readouterr().err.splitlines()
    assert len([line for line in err if "unreadable summary.json" in line]) == 3
    assert any("killed: no summary.json" in line for line in err)
    assert any("good0: events.jsonl line 2 unreadable" in line for line in err)
    assert "| 0,1 |" in table(runs)


def test_a_missing_path_is_not_taken_for_a_wandb_group(tmp_path, monkeypatch, capsys) -> None:
    from esper.report.__main__ import main

    (tmp_path / "outputs").mkdir()
    monkeypatch.chdir(tmp_path)
    for target, named in [
        ("/tmp/not/there",) * 2,
        ("outputs/multiruns/typo",) * 2,
        ("./a/b", "a/b"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main([target, "--dry-run"])
        assert exited.value.code == 2, target
        said = capsys.readouterr().err.splitlines()[-1]
        assert said.endswith(f": {named}: no such directory, nor one W&B entity/project/group")


def test_dry_run_on_local_runs_and_a_policy_training_are_told_what_they_are(
    tmp_path, capsys
) -> None:
    """helper-found: `--dry-run` (a W&B Report's) was taken on local runs and report.html
    written all the same; a policy training's directory said only 'no readable
    summary.json'."""
    from esper.report.__main__ import main

    write_run(tmp_path, "run", [8, 8], "NoPolicy", 0, 0.5)
    training = tmp_path / "training"
    training.mkdir()
    (training / "simic.pt").write_bytes(b"")
    for argv, said in [
        ([str(tmp_path / "run"), "--dry-run"], "--dry-run: builds a W&B Report without saving"),
        (
            [str(training)],
            f"holds a policy training, whose learning curve is python -m esper.simic.curve "
            f"{training}",
        ),
    ]:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "run" / "report").exists(), "nothing written"


def test_a_row_names_the_scheduler_its_settings_belong_to(tmp_path) -> None:
    """helper-found: two runs differing in their scheduler were labelled by its settings
    alone (`trainer.scheduler.gamma=0.9`), the class left out with every `_target_`."""
    from esper.report.table import groups_of, labels

    for seed, (target, extra) in enumerate(
        [
            ("torch.optim.lr_scheduler.ExponentialLR", {"gamma": 0.9}),
            ("torch.optim.lr_scheduler.StepLR", {"step_size": 3}),
        ]
    ):
        write_run(tmp_path, f"r{seed}", [8, 8], "NoPolicy", 0, 0.5)
        events = tmp_path / f"r{seed}" / "events.jsonl"
        started = json.loads(events.read_text())
        started["config"]["trainer"] = {"scheduler": {"_target_": target, **extra}}
        events.write_text(json.dumps(started) + "\n")
        summary = json.loads((tmp_path / f"r{seed}" / "summary.json").read_text())
        (tmp_path / f"r{seed}" / "summary.json").write_text(
            json.dumps({**summary, "config_hash": f"h{seed}"})
        )
    said = sorted(labels(groups_of(load_runs([tmp_path]))).values())
    assert said[0].startswith("trainer.scheduler._target_=torch.optim.lr_scheduler.ExponentialLR")
    assert "trainer.scheduler._target_=torch.optim.lr_scheduler.StepLR" in said[1]
    assert not any("policy._target_" in label or "model._target_" in label for label in said)


def _resumed_pair(tmp_path: Path, earlier_seed: int, resumed_from: str | None = None) -> Path:
    """Run a (epochs 0..2, a seed germinated at 1) and b, resumed from a's checkpoint (3..4)."""
    config = {"seed": 0, "dataset": {"n": 1}, "model": {"hidden": [8, 8]}, "policy": {}}

    def events(run: Path, seed: int, epochs: range, resumed: str | None) -> None:
        run.mkdir(parents=True)
        lines = [{"kind": "run_started", "config": {**config, "seed": seed}}]
        lines[0]["resumed_from"] = resumed
        for epoch in epochs:
            lines.append(
                {
                    "kind": "epoch_ended",
                    "epoch": epoch,
                    "step": epoch,
                    "metrics": {"val/accuracy": 0.5},
                }
            )
            if epoch == 1:
                lines.append(
                    {
                        "kind": "adaptation",
                        "epoch": 1,
                        "slot": "s",
                        "from": "DORMANT",
                        "to": "GERMINATED",
                    }
                )
        (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))

    events(tmp_path / "a", earlier_seed, range(3), None)
    checkpoint = resumed_from or str(tmp_path / "a" / "checkpoints" / "last.pt")
    events(tmp_path / "b", 0, range(3, 5), checkpoint)
    summary = {"status": "completed", "seed": 0, "config_hash": "h", "choices": {}}
    summary |= {"metrics": {"test_accuracy": 0.5, "val_accuracy": 0.5}}
    summary |= {"params": {"total": 1, "seeds": 0}, "flops_per_sample": {"total": 1}}
    (tmp_path / "b" / "summary.json").write_text(json.dumps(summary))
    return tmp_path / "b"


@pytest.mark.parametrize(
    ("earlier_seed", "resumed_from", "epochs", "said"),
    [
        (0, None, [0, 1, 2, 3, 4], None),
        # second pass: a directory replaced since (another seed) was spliced in; a relative
        # path was read from wherever the report ran
        (7, None, [3, 4], "which holds another run now (seed differ)"),
        (0, "a/checkpoints/last.pt", [3, 4], "a relative path: its epochs before the resume"),
    ],
)
def test_a_run_resumed_from_another_directory_reads_its_earlier_epochs_there(
    tmp_path, capsys, monkeypatch, earlier_seed, resumed_from, epochs, said
) -> None:
    resumed = _resumed_pair(tmp_path, earlier_seed, resumed_from)
    monkeypatch.chdir(tmp_path)  # where `a` would be found, were a relative path read
    (run,) = load_runs([resumed])
    assert [row["epoch"] for row in run["history"]] == epochs
    assert bool(run["adaptation_events"]) == (epochs[0] == 0)
    err = capsys.readouterr().err
    assert (said in err) if said else not err, err
