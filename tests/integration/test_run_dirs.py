"""Output directories never collide (issue 8, group 3; adversarial cases B25, B26): runs started
in the same second get their own directories, and a directory that holds a run is refused
unless the new run continues it (`trainer.resume`) or replaces it (`trainer.overwrite=true`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict, read_write

from esper.app import build
from esper.config import ConfigError
from esper.preflight import (
    RunDirGuard,
    check_sweep_dir,
    claim_timestamped_dir,
    held_runs,
    sweep_dirs,
)
from tests.conftest import CONF, ROOT, run_cli
from tests.integration.test_config_tree import compose_job

QUIET = ("logger=none", "policy=none")
REFUSED = (
    r"run_dir='.*' holds a run already \({}\); choose another directory .*trainer\.overwrite=true"
)


def earlier_run(run_dir: Path, marker: str) -> Path:
    path = run_dir / marker
    run_dir.mkdir(parents=True, exist_ok=True)
    if marker == "checkpoints":
        path.mkdir()
        (path / "last.pt").write_bytes(b"an earlier run's checkpoint")
    else:
        path.write_text("an earlier run's " + marker)
    return path


@pytest.mark.parametrize("marker", ["summary.json", "events.jsonl", "checkpoints"])
def test_a_directory_holding_a_run_is_refused_and_left_alone(make_config, tmp_path, marker):
    run_dir = tmp_path / "run"
    earlier_run(run_dir, marker)
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(ConfigError, match=REFUSED.format(re.escape(marker))):
        build(make_config(*QUIET, run_dir=run_dir))
    assert sorted(p.name for p in run_dir.iterdir()) == before, "nothing written"


def test_what_hydra_writes_before_the_job_is_not_a_run(make_config, tmp_path) -> None:
    """Nor are empty leftovers: a mount point for checkpoints/, an empty events.jsonl."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("{}")
    (run_dir / "run.log").write_text("")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "events.jsonl").write_text("")
    build(make_config(*QUIET, run_dir=run_dir)).discard()


def test_overwrite_replaces_the_earlier_run(make_config, tmp_path) -> None:
    run_dir = tmp_path / "run"
    for marker in ("summary.json", "events.jsonl", "checkpoints", "wandb"):
        earlier_run(run_dir, marker)
    experiment = build(make_config(*QUIET, "trainer.overwrite=true", run_dir=run_dir))
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "wandb").exists()
    assert "earlier" not in (run_dir / "events.jsonl").read_text()
    experiment.discard()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "stopped"


def test_a_config_error_with_overwrite_still_removes_nothing(make_config, tmp_path) -> None:
    run_dir = tmp_path / "run"
    summary = earlier_run(run_dir, "summary.json")
    with pytest.raises(ConfigError, match=r"policy\.max_seeds=-1"):
        build(make_config("trainer.overwrite=true", "policy.max_seeds=-1", run_dir=run_dir))
    assert summary.read_text() == "an earlier run's summary.json"


def test_resuming_into_the_checkpoints_own_directory_goes_on(make_config, tmp_path) -> None:
    run_dir = tmp_path / "run"
    first = build(
        make_config(*QUIET, "trainer.max_epochs=3", "trainer.stop_after_epoch=0", run_dir=run_dir)
    )
    assert first.run().epochs == 1
    for resume in (run_dir, run_dir / "checkpoints" / "last.pt"):
        resumed = build(
            make_config(*QUIET, "trainer.max_epochs=3", f"trainer.resume={resume}", run_dir=run_dir)
        )
        resumed.discard()
    other = tmp_path / "other"
    earlier_run(other, "summary.json")
    with pytest.raises(ConfigError, match=REFUSED.format("summary\\.json")):
        build(
            make_config(*QUIET, "trainer.max_epochs=3", f"trainer.resume={run_dir}", run_dir=other)
        )
    build(
        make_config(
            *QUIET, "trainer.max_epochs=3", f"trainer.resume={run_dir}", run_dir=tmp_path / "new"
        )
    ).discard()


def test_default_run_and_sweep_dirs_carry_microseconds(tmp_path) -> None:
    cfg = compose_job(f"paths.output_dir={tmp_path}")
    stamp = r"\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{6}-esper"
    assert re.fullmatch(rf".*/runs/{stamp}", str(cfg.hydra.run.dir))
    assert re.fullmatch(rf".*/multiruns/{stamp}", str(cfg.hydra.sweep.dir))


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_directories(tmp_path) -> None:
    args = ["debug=fast", "trainer.progress=false", "policy=none", f"paths.output_dir={tmp_path}"]
    env = {"ESPER_KERNEL_STORE": str(tmp_path / "k"), "WANDB_SILENT": "true"}
    runs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), *args, f"seed={seed}"],
            cwd=tmp_path,
            env={**__import__("os").environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 1)
    ]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read() if run.stderr else ""
    summaries = sorted((tmp_path / "runs").glob("*/*/summary.json"))
    assert len(summaries) == 2
    assert sorted(json.loads(s.read_text())["seed"] for s in summaries) == [0, 1]


def test_a_default_run_dir_claimed_already_gives_the_run_the_next_name(tmp_path) -> None:
    """Found by the test above (once in about twenty CI runs): both runs resolved the same
    microsecond, wrote into one directory, and one failed at summary.json (ENOENT: the
    other's rename had taken its temporary file). The other run, here, claimed it first."""
    cfg = compose_job(f"paths.output_dir={tmp_path}")
    taken = Path(str(cfg.hydra.run.dir))
    taken.mkdir(parents=True)
    RunDirGuard().on_run_start(cfg)
    assert Path(str(cfg.hydra.run.dir)) == taken.with_name(taken.name + "-2")
    assert Path(str(cfg.hydra.run.dir)).is_dir(), "claimed: a third run takes -3"


def test_a_run_dir_named_without_a_time_is_not_renamed(tmp_path) -> None:
    cfg = compose_job(f"hydra.run.dir={tmp_path / 'mine'}")
    (tmp_path / "mine").mkdir()
    RunDirGuard().on_run_start(cfg)
    assert Path(str(cfg.hydra.run.dir)) == tmp_path / "mine"


def test_a_resume_into_its_time_named_dir_continues_there(tmp_path) -> None:
    """helper-found: `trainer.resume=D hydra.run.dir=<a pattern naming D>` went to D-2."""
    cfg = compose_job(f"hydra.run.dir={tmp_path}/d-${{now:%Y}}", f"trainer.resume={tmp_path}")
    taken = Path(str(cfg.hydra.run.dir))
    taken.mkdir()
    with read_write(cfg), open_dict(cfg):
        cfg.trainer.resume = str(taken)
    RunDirGuard().on_run_start(cfg)
    assert Path(str(cfg.hydra.run.dir)) == taken


def test_a_refused_training_leaves_no_directory_it_claimed(tmp_path, capsys) -> None:
    """helper-found: a policy training refused after the claim (a `simic.resume` that is no
    checkpoint) left an empty directory behind."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train_policy",
            overrides=[f"hydra.run.dir={tmp_path}/p-${{now:%Y}}", f"simic.resume={tmp_path}/no"],
            return_hydra_config=True,
        )
    with pytest.raises(SystemExit):
        RunDirGuard().on_run_start(cfg)
    assert "not a Simic checkpoint" in capsys.readouterr().err
    assert not list(tmp_path.glob("p-*"))


@pytest.mark.parametrize(
    ("name", "quote"),
    [("it's a \\x ", '"'), ('say "a" \\x ', "'")],
    ids=["a single quote", "a double quote"],
)
def test_a_claimed_sweep_dir_reads_back_exactly_in_its_jobs(tmp_path, name, quote) -> None:
    """helper-found: `\\` in the path reached the jobs doubled: the sweep's multirun.yaml in
    one directory, its jobs in another."""
    cfg = compose_job(f"hydra.sweep.dir={quote}{tmp_path / name}${{now:%Y}}{quote}")
    taken = Path(str(cfg.hydra.sweep.dir))
    taken.mkdir()
    claimed = claim_timestamped_dir(cfg, "sweep")
    assert claimed == taken.with_name(taken.name + "-2")
    (override,) = OverridesParser.create().parse_overrides([cfg.hydra.overrides.hydra[-1]])
    assert override.value() == str(claimed)


def test_two_sweeps_with_one_timestamped_dir_each_get_their_own(tmp_path) -> None:
    """The jobs compose their configuration again (under joblib in other processes): they
    must land in the sweep directory the sweep claimed, not the one its pattern names."""
    args = ("-m", *QUIET, "debug=fast", "trainer.progress=false", "seed=3")
    for _ in range(2):
        result = run_cli(*args, "hydra.sweep.dir=sweep-${now:%Y}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    year = sorted(p.name for p in tmp_path.glob("sweep-*"))[0]
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("sweep-*/*/summary.json"))
    assert found == [f"{year}-2/0/summary.json", f"{year}/0/summary.json"]
    assert (tmp_path / f"{year}-2" / "multirun.yaml").is_file(), "the sweep's own files too"


@pytest.mark.slow
def test_run_py_overwrite_leaves_the_new_runs_lines_alone_in_run_log(tmp_path) -> None:
    """helper-found: run.log kept every replaced run's lines (three result tables beside one
    summary.json); the replaced run's are cut, the new run's kept from its first line."""
    run_dir = tmp_path / "run"
    earlier_run(run_dir, "summary.json")
    (run_dir / "run.log").write_text("an earlier run's line\n")
    (run_dir / "notes.log").write_text("a user's own notes\n")  # not Hydra's: kept as it is
    env = {"ESPER_KERNEL_STORE": str(tmp_path / "k")}
    args = (*QUIET, "trainer.max_epochs=1", "trainer.overwrite=true", f"hydra.run.dir={run_dir}")
    result = run_cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    log = (run_dir / "run.log").read_text()
    assert "earlier" not in log
    assert log.count(" outputs: ") == 1 and log.startswith("["), log[:200]
    assert (run_dir / "notes.log").read_text() == "a user's own notes\n"
    # a sweep's jobs, each replacing its own earlier job (helper-found: the first fix, made
    # before Hydra's logging opened the file, never ran for a sweep's jobs)
    sweep = ("-m", *QUIET, "trainer.max_epochs=1", "seed=0,1", "trainer.overwrite=true")
    for _ in range(2):
        result = run_cli(*sweep, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "run.log").read_text().count(" outputs: ") == 1


@pytest.mark.slow
def test_run_py_refuses_a_used_run_dir_before_hydra_writes_into_it(tmp_path) -> None:
    run_dir = tmp_path / "run"
    earlier_run(run_dir, "summary.json")
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text("the earlier run's config")
    env = {"ESPER_KERNEL_STORE": str(tmp_path / "k")}
    result = run_cli("logger=none", f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert re.fullmatch("esper: " + REFUSED.format("summary\\.json") + ".*", line)
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "the earlier run's config"
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "summary.json"]


@pytest.mark.slow
def test_a_sweep_into_a_sweep_directory_holding_runs_is_refused_before_hydra_writes(
    tmp_path,
) -> None:
    """Rerunning a sweep into its own directory was refused job by job, after Hydra had
    rewritten each job's `.hydra/` (it saves a job's config before any per-job callback): the
    earlier sweep's recorded configs were lost. Now the whole sweep is refused at once
    (`trainer.overwrite=true` lets each job clear its own directory, as a single run does:
    test_overwrite_replaces_the_earlier_run)."""
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        earlier_run(sweep / job, "summary.json")
        (sweep / job / ".hydra").mkdir()
        (sweep / job / ".hydra" / "config.yaml").write_text(f"job {job}'s config")
    (sweep / "multirun.yaml").write_text("the earlier sweep")
    env = {"ESPER_KERNEL_STORE": str(tmp_path / "k")}
    args = ("-m", "policy=none,random", "logger=none", f"hydra.sweep.dir={sweep}")
    result = run_cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert re.fullmatch(
        r"esper: hydra\.sweep\.dir='.*sweep' holds 2 runs already \(0, 1\); choose another "
        r"directory \(hydra\.sweep\.dir=\.\.\.\), or pass trainer\.overwrite=true to let each job "
        r"replace the run in its own directory",
        line,
    )
    assert [(sweep / j / ".hydra" / "config.yaml").read_text() for j in "01"] == [
        "job 0's config",
        "job 1's config",
    ]
    assert (sweep / "multirun.yaml").read_text() == "the earlier sweep"
    assert sorted(p.name for p in (sweep / "0").iterdir()) == [".hydra", "summary.json"]


def test_runs_held_under_a_sweep_directory(tmp_path) -> None:
    """Jobs may sit at any depth (`hydra.sweep.subdir` may be any interpolation); a job
    directory's own contents (checkpoints/, wandb/) are not searched for more jobs."""
    sweep = tmp_path / "sweep"
    assert held_runs(sweep) == []
    earlier_run(sweep / "a" / "policy=none", "events.jsonl")
    earlier_run(sweep / "b", "checkpoints")
    (sweep / "c" / ".hydra").mkdir(parents=True)  # what Hydra wrote before a refused job
    earlier_run(sweep / "b" / "checkpoints" / "nested", "summary.json")
    assert held_runs(sweep) == [sweep / "a" / "policy=none", sweep / "b"]


def test_a_sweep_directory_that_is_a_file_is_refused(tmp_path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a sweep")
    with pytest.raises(ConfigError, match=r"hydra\.sweep\.dir='.*afile' is a file"):
        check_sweep_dir(afile, overwrite=False)
    assert afile.read_text() == "not a sweep"


def test_sweep_dirs_resolve_a_swept_key_as_each_job_will(tmp_path) -> None:
    """`hydra.sweep.dir=out_${name}` with `name=a,b`: the sweep's process resolves it with the
    unswept name (`out_esper`), the jobs to out_a and out_b, where an earlier sweep's runs are;
    a rerun was refused job by job only after Hydra had rewritten their `.hydra/`."""
    cfg = compose_job(f"hydra.sweep.dir={tmp_path}/out_${{name}}")
    with read_write(cfg.hydra):
        cfg.hydra.overrides.task = ["name=a,b", "seed=0,1", "policy=none"]
    assert sweep_dirs(cfg) == [tmp_path / f"out_{name}" for name in ("a", "b", "esper")]
    plain = compose_job(f"hydra.sweep.dir={tmp_path}/sweep")
    with read_write(plain.hydra):
        plain.hydra.overrides.task = ["name=a,b"]
    assert sweep_dirs(plain) == [tmp_path / "sweep"]
