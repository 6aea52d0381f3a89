"""A policy training's directory is its own, as a run's is: a new training there is refused
(or replaces it with `simic.overwrite=true`), a resume that cannot continue it leaves it as it
was, and SIGTERM stops it in one line that says how to resume, which then logs each update
once. Each case failed before (an adversarial pass): the new training silently replaced the
old simic.pt, a refused resume rewrote `.hydra/`, a resume to fewer updates did nothing and
said nothing, a damaged simic.pt was a KeyError traceback, SIGTERM was a silent -15, and the
W&B curve had the update after the last checkpoint twice."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from esper.config import ConfigError
from esper.events.wandb_file import HEADER, read_run
from esper.simic.settings import SimicConfig
from esper.simic.train import resume_state
from tests.conftest import ROOT, own_env
from tests.integration.test_simic_training import TINY, launch


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-update training (a checkpoint after each update)."""
    run_dir = tmp_path_factory.mktemp("simic") / "done"
    env = own_env(ESPER_KERNEL_STORE=str(run_dir.parent / "kernels"))
    result = launch(run_dir, "simic.updates=2", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def copy_of(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    return run_dir


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("esper:")]
    return line


def test_a_new_training_in_a_trained_directory_is_refused_or_replaces_it(trained, tmp_path) -> None:
    run_dir = copy_of(trained, tmp_path)
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    before = (run_dir / "simic.pt").read_bytes(), (run_dir / ".hydra" / "config.yaml").read_text()
    line = one_line(launch(run_dir, "simic.updates=1", env=env))
    assert "holds a run already (simic.pt, policy.pt, policies)" in line
    assert f"simic.resume='{run_dir}'" in line and "simic.overwrite=true" in line
    after = (run_dir / "simic.pt").read_bytes(), (run_dir / ".hydra" / "config.yaml").read_text()
    assert after == before, "the earlier training and its recorded config are kept"

    (run_dir / "learning_curve.png").write_bytes(b"the replaced training's curve")
    result = launch(run_dir, "simic.updates=1", "simic.overwrite=true", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run_dir / "learning_curve.png").exists(), "helper-found: it was left"
    assert [p.name for p in (run_dir / "policies").iterdir()] == ["update_1.pt"]
    assert torch.load(run_dir / "simic.pt", weights_only=True)["update"] == 1


def test_a_resume_that_only_writes_the_policy_elsewhere_leaves_a_resumable_copy(
    trained, tmp_path
) -> None:
    """`simic.updates` as many as were done, with `simic.output`: no update runs, the policy
    is written; second pass: into another directory, that directory held run.log alone and
    was refused as a resume (`not a Simic checkpoint`)."""
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    copy, out = tmp_path / "copy", tmp_path / "final.pt"
    result = launch(
        copy, "simic.updates=2", f"simic.resume={trained}", f"simic.output={out}", env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file()
    state = torch.load(copy / "simic.pt", weights_only=True)
    assert state["update"] == 2 and len(state["history"]) == 2
    line = one_line(launch(copy, "simic.updates=2", f"simic.resume={copy}", env=env))
    assert "the training resumed has done 2 updates; allowed: 3 or more" in line


def test_a_run_and_a_policy_training_refuse_each_others_directory(trained, tmp_path) -> None:
    """Before, each started in the other's directory: its files mixed with the other's, and
    `.hydra/config.yaml` replaced by the other kind's."""
    run_dir = copy_of(trained, tmp_path)
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "logger=none", f"hydra.run.dir={run_dir}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = one_line(result)
    # helper-found: each offered a resume of the other kind's directory, which then failed
    assert "holds a policy training (simic.pt, policy.pt, policies), not this kind" in line
    assert "trainer.overwrite=true" in line and not (run_dir / "summary.json").exists()
    assert "trainer.resume" not in line

    a_run = tmp_path / "a_run"
    a_run.mkdir()
    (a_run / "summary.json").write_text('{"status": "completed"}')
    line = one_line(launch(a_run, "simic.updates=1", env=env))
    assert "holds a run (summary.json), not this kind" in line and "simic.resume" not in line
    assert not (a_run / "simic.pt").exists()


def damaged(run_dir) -> str:
    state = torch.load(run_dir / "simic.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, run_dir / "simic.pt")
    return "a damaged Simic checkpoint (no optimizer)"


def spoiled(key, value, said):
    def spoil(run_dir) -> str:
        state = torch.load(run_dir / "simic.pt", weights_only=True)
        state[key] = value(state[key])
        torch.save(state, run_dir / "simic.pt")
        return said

    return spoil


def not_a_checkpoint(run_dir) -> str:
    (run_dir / "simic.pt").write_bytes(b"\x80\x04not a pickle at all" * 10)
    return "not a Simic checkpoint (a pickle that torch's safe loader refuses"


@pytest.mark.parametrize(
    ("overrides", "spoil", "said"),
    [
        (
            ("simic.updates=3", "simic.ppo.lr=0.01"),
            None,
            "(simic.ppo.lr: 0.001 -> 0.01); only simic.updates, simic.workers, simic",
        ),
        (
            ("simic.updates=3",),
            spoiled(
                "weights",
                lambda w: {k: v[..., :1] for k, v in w.items()},
                "a damaged Simic checkpoint (Error(s) in loading state_dict for PolicyNet:",
            ),
            None,
        ),
        (
            ("simic.updates=3", "simic.overwrite=true"),
            None,
            "simic.overwrite=true with simic.resume=",
        ),
    ],
    ids=["changed-setting", "weights-shape", "overwrite-and-resume"],
)
def test_a_resume_that_cannot_continue_leaves_the_training_as_it_was(
    trained, tmp_path, overrides, spoil, said
) -> None:
    """The command line: refused in one line before Hydra records the command in `.hydra/`."""
    run_dir = copy_of(trained, tmp_path)
    if spoil is not None:
        said = spoil(run_dir)
    before = (run_dir / "simic.pt").read_bytes(), (run_dir / ".hydra" / "config.yaml").read_text()
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    line = one_line(launch(run_dir, *overrides, f"simic.resume={run_dir}", env=env))
    assert said in line, line
    after = (run_dir / "simic.pt").read_bytes(), (run_dir / ".hydra" / "config.yaml").read_text()
    assert after == before, "simic.pt and the recorded config are as they were"


@pytest.mark.parametrize(
    ("updates", "spoil", "said"),
    [
        (1, None, "simic.updates=1: the training resumed has done 2 updates; allowed: 3 or more"),
        (2, None, "simic.updates=2: the training resumed has done 2 updates; allowed: 3 or more"),
        (3, damaged, None),
        (3, not_a_checkpoint, None),
        (3, spoiled("settings", lambda _: None, "(settings is a NoneType)"), None),
        (3, spoiled("baselines", lambda _: [1], "(baselines is a list)"), None),
        (3, spoiled("update", lambda _: "2", "(update is a str)"), None),
    ],
    ids=[
        "fewer-updates",
        "as-many-updates",
        "missing-key",
        "not-a-pickle",
        "settings-none",
        "baselines",
        "update",
    ],
)
def test_resume_state_names_what_cannot_be_continued(trained, tmp_path, updates, spoil, said):
    """What the guard and train() both ask before a resume (`resume_state`), on more damage."""
    run_dir = copy_of(trained, tmp_path)
    kept = torch.load(run_dir / "simic.pt", weights_only=True)["settings"]
    if spoil is not None:
        said = spoil(run_dir)
    settings = SimicConfig.model_validate(
        {**kept, "updates": updates, "resume": str(run_dir), "workers": 1, "checkpoint_every": 1}
    )
    with pytest.raises(ConfigError) as refused:
        resume_state(settings)
    assert said in str(refused.value) and "\n" not in str(refused.value), refused.value


@pytest.mark.slow
def test_sigterm_says_how_to_resume_and_the_resume_logs_each_update_once(tmp_path) -> None:
    run_dir = tmp_path / "run"
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    common = (
        *TINY,
        "logger=wandb",
        "simic.updates=4",
        "simic.checkpoint_every=2",
        "simic.episode_epochs=25",  # updates of seconds: the signal lands inside one
    )
    command = [sys.executable, str(ROOT / "run.py"), "--config-name", "train_policy", *common]
    process = subprocess.Popen(
        [*command, f"hydra.run.dir={run_dir}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = ""
    try:
        while "| 3/4" not in seen:  # update 2 logged, after the checkpoint of update 2
            chunk = process.stderr.read(1)
            assert chunk, seen[-3000:]
            seen += chunk
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = seen + rest
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr
    assert (
        f"esper: interrupted by SIGTERM during update 4; simic.resume='{run_dir}' continues "
        "from update 2, its last checkpoint"
    ) in stderr, stderr[-600:]
    logged = [row["update"] for row in read_run(run_dir / "wandb").history]
    # W&B's `update` is the index from 0: the third update was logged before the signal,
    # after the checkpoint of the second; the fourth was running
    assert logged == [0, 1, 2]

    resumed = subprocess.run(
        [*command, f"hydra.run.dir={run_dir}", f"simic.resume={run_dir}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = torch.load(run_dir / "simic.pt", weights_only=True)["history"]
    assert [row["update"] for row in history] == [0, 1, 2, 3]
    logged = [row["update"] for row in read_run(run_dir / "wandb").history]
    assert logged == [0, 1, 2, 3], "each update once on the W&B curve"

    # helper-found: after a SIGKILL whose W&B files held their header alone (W&B had not
    # filled its first 32 KiB block), the resume logged from its checkpoint on: the curve
    # lacked the updates before it. That state, then one more update:
    for segment in (run_dir / "wandb").glob("**/run-*.wandb"):
        segment.write_bytes(segment.read_bytes()[: len(HEADER)])
    again = subprocess.run(
        [*command, f"hydra.run.dir={run_dir}", f"simic.resume={run_dir}", "simic.updates=5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    logged = [row["update"] for row in read_run(run_dir / "wandb").history]
    assert logged == [0, 1, 2, 3, 4], "the checkpoint's updates W&B lacked are logged again"


def test_a_training_that_cannot_write_its_checkpoint_says_why_in_one_line(tmp_path) -> None:
    """helper-found: a full disk or a read-only directory at simic.pt or a policy was a Hydra
    traceback. A directory where the temporary file of the first one written (the policy the
    update's episodes load) goes fails the write as a full disk would."""
    run_dir = tmp_path / "train"
    (run_dir / "weights" / "current.pt.tmp").mkdir(parents=True)
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    result = launch(run_dir, "simic.updates=1", env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("esper:")]
    assert re.fullmatch(
        r"esper: the policy training failed: cannot write \S+/weights/current\.pt: .*\(EISDIR\); "
        r"there is no earlier one",
        line,
    ), line


def test_a_resume_into_another_directory_takes_the_kernels_and_policies_with_it(
    trained, tmp_path
) -> None:
    """helper-found: resumed into a new directory, the training compiled and timed every
    kernel again in a fresh store (the timings are policy observations: the curve parted from
    the one it would have had in place), and its policies/ held only the updates after the
    resume."""
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    before = sorted(p.name for p in (trained / "kernels" / "objects").glob("*/*.pt2"))
    elsewhere = tmp_path / "elsewhere"
    result = launch(elsewhere, "simic.updates=3", f"simic.resume={trained}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    said = (elsewhere / "run.log").read_text()
    assert (
        "copied its kernel store and its 2 kept policies (policies/update_*.pt, to update 2) "
        f"from {trained}" in said
    ), said[-3000:]
    assert sorted(p.name for p in (elsewhere / "policies").iterdir()) == [
        "update_1.pt",
        "update_2.pt",
        "update_3.pt",
    ]
    for name in ("update_1.pt", "update_2.pt"):
        assert (elsewhere / "policies" / name).read_bytes() == (
            trained / "policies" / name
        ).read_bytes()
    after = sorted(p.name for p in (elsewhere / "kernels" / "objects").glob("*/*.pt2"))
    assert before and set(before) <= set(after)
    state = torch.load(elsewhere / "simic.pt", weights_only=True)
    done = torch.load(trained / "simic.pt", weights_only=True)
    assert state["history"][:2] == done["history"] and len(state["history"]) == 3
    assert sorted(p.name for p in (trained / "policies").iterdir()) == [
        "update_1.pt",
        "update_2.pt",
    ]
