"""W&B history survives a SIGKILL: the resumed run logs the epochs that events.jsonl had and
the killed process never handed to W&B, and a resume into the same run directory reads back
as one W&B run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from esper.events.wandb_file import read_run
from tests.conftest import ROOT, own_env
from tests.faults.test_signals import epochs_ended, signal_after


@pytest.mark.slow
@pytest.mark.parametrize("killed_after", [3, 30])
def test_a_killed_run_resumed_in_place_is_one_whole_wandb_run(tmp_path, killed_after) -> None:
    """Killed after 3 epochs, the run's file holds W&B's header alone (wandb-core writes in
    32 KiB blocks): adversarial case B22, read back as a second run of id ''."""
    run_dir = tmp_path / "run"
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    common = ["policy=none", "trainer.max_epochs=120", "trainer.progress=false"]
    command = [sys.executable, str(ROOT / "run.py"), *common, f"hydra.run.dir={run_dir}"]
    # killed as a scheduler or a terminal kills a job: its whole process group, W&B's service
    # included (a lone SIGKILL leaves that service holding the run id for a while; a resumed
    # run waits for it, up to sinks.RUN_ID_WAIT_S)
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    group = os.getpgid(first.pid)
    signal_after(run_dir, killed_after, first.pid, signal.SIGKILL).join()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert epochs_ended(run_dir) >= killed_after

    resumed = subprocess.run(
        [*command, f"trainer.resume={run_dir}"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = read_run(run_dir / "wandb")
    epochs = {row["epoch"] for row in run.history if "val/accuracy" in row}
    assert epochs == set(range(120)), f"missing epochs: {sorted(set(range(120)) - epochs)[:10]}"
    assert run.exit_code == 0
