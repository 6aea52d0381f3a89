"""A W&B directory that holds two runs: a resume reads back its own run's rows alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from esper.events.wandb_file import RunFileError, read_run
from tests.conftest import own_env

LOG = """
import sys, wandb
run = wandb.init(mode="offline", dir=sys.argv[1], id=sys.argv[2], project="esper-test")
for update in map(int, sys.argv[3].split(",")):
    run.log({"update": update, "episode/return": 0.1 * update})
run.finish(exit_code=int(sys.argv[4]))
"""


def offline_run(run_dir, run_id: str, updates: str, exit_code: int) -> None:
    """A real offline W&B run in `run_dir/wandb`, from a process of its own (as a training's)."""
    subprocess.run(
        [sys.executable, "-c", LOG, str(run_dir), run_id, updates, str(exit_code)],
        env=own_env(WANDB_MODE="offline"),
        check=True,
        timeout=120,
    )


def test_a_resume_reads_the_updates_of_its_own_run_alone(tmp_path) -> None:
    """helper-found: a training killed before its first checkpoint, then started over in the
    same directory (as its stop line says), leaves the killed attempt's run beside the new
    one; the resume read no update as logged (`expected one W&B run, found 2`) and logged
    every update a second time."""
    from esper.simic.train import _logged_updates

    offline_run(tmp_path, "killedattempt", "0,1,2", exit_code=1)
    offline_run(tmp_path, "thetraining", "0,1", exit_code=1)
    with pytest.raises(RunFileError, match="expected one W&B run, found 2"):
        read_run(tmp_path / "wandb")
    kept = read_run(tmp_path / "wandb", "thetraining")
    assert kept.run_id == "thetraining"
    assert [row["update"] for row in kept.history] == [0, 1]
    assert _logged_updates(str(tmp_path), "thetraining") == {0, 1}
    assert _logged_updates(str(tmp_path), None) == set(), "a training that logged no W&B run"
    with pytest.raises(RunFileError, match="no W&B record of run other"):
        read_run(tmp_path / "wandb", "other")
