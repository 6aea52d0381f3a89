"""The training command end to end (real worker processes, real episodes), and its resume
continuing the same learning curve."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from esper.policy.gnn import GnnPolicy
from tests.conftest import ROOT, own_env

TINY = (
    "logger=none",
    "simic.tasks=[{name: spirals, overrides: ['dataset=spirals', 'model=mlp', 'blueprints=vector']}]",
    "simic.train_seeds=[100,101]",
    "simic.episode_epochs=4",
    "simic.episodes_per_update=2",
    "simic.group_size=2",
    "simic.workers=1",
    "simic.checkpoint_every=1",
    "simic.ppo.minibatch=4",
)


def launch(run_dir, *overrides: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The training command on the tiny suite, into `run_dir`."""
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "--config-name",
            "train_policy",
            *TINY,
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def train(run_dir, *overrides: str, env: dict[str, str]) -> list[dict[str, float]]:
    result = launch(run_dir, *overrides, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(run_dir / "simic.pt", weights_only=True)
    return [{k: v for k, v in row.items() if k != "update_s"} for row in state["history"]]


@pytest.mark.slow
def test_training_imitates_then_learns_and_its_resume_continues_the_same_curve(
    tmp_path,
) -> None:
    """The training command end to end: `simic.imitate`'s teacher episodes and passes of
    imitation (`update_0.pt` is the policy imitation alone gives), then PPO updates, each
    checkpointed; a resume continues the same learning curve without imitating again. (One
    test, where two ran six trainings: the resume without imitation is also
    test_simic_run_dir.py's, after a SIGTERM.)"""
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    imitate = (
        "simic.lifecycle=schedule",
        "simic.imitate.episodes=2",
        'simic.imitate.teacher=["policy=heuristic","policy.patience=1","policy.warmup_epochs=2",'
        '"policy.min_delta=1.0"]',
        "simic.imitate.epochs=8",
    )
    straight = train(tmp_path / "straight", "simic.updates=2", *imitate, env=env)
    assert len(straight) == 2
    assert {
        "episode/return",
        "loss/policy",
        "loss/explained_variance",
        "loss/approx_kl",
        "decisions/germinate",
    } <= set(straight[0])
    assert straight[-1]["decisions/advance"] == 0, "under the schedule the GNN only germinates"
    state = torch.load(tmp_path / "straight" / "simic.pt", weights_only=True)
    taught = state["imitation"]
    assert taught["imitate/steps"] == 8 and taught["imitate/teacher_added_params"] > 0
    assert taught["imitate/teacher_probability"] > 0.5, "imitation taught the teacher's choices"
    kept = sorted(p.name for p in (tmp_path / "straight" / "policies").iterdir())
    assert kept == ["update_0.pt", "update_1.pt", "update_2.pt"], "one policy per checkpoint"
    first = GnnPolicy(checkpoint=str(tmp_path / "straight" / "policies" / "update_0.pt"))
    assert first.describe()["trained"]["history"] == taught
    # killed after its first update, resumed: the same episodes, no second imitation. Its
    # kernel store starts as the first training's: the GNN reads kernel latencies, which a new
    # store measures anew, and the losses then differed (a value loss by 4% once in CI)
    shutil.copytree(tmp_path / "straight" / "kernels", tmp_path / "split" / "kernels")
    train(tmp_path / "split", "simic.updates=1", *imitate, env=env)
    result = launch(
        tmp_path / "split",
        "simic.updates=2",
        *imitate,
        f"simic.resume={tmp_path / 'split'}",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "teacher episodes" not in result.stderr
    resumed = torch.load(tmp_path / "split" / "simic.pt", weights_only=True)
    assert resumed["imitation"] == taught, "the same teacher episodes, counts and losses"
    # The episodes (rewards, decisions, sizes) are identical; the PPO statistics agree to a
    # few percent (the kernels' measured latencies, a feature the GNN reads, differ in the
    # last bits between two measurements).
    for got, want in zip(resumed["history"], straight, strict=True):
        assert got.keys() - {"update_s"} == want.keys()
        for key in want:
            if key.startswith(("episode/", "decisions/", "update")):
                assert got[key] == want[key], key
            elif key != "loss/explained_variance":  # a ratio of tiny variances
                assert got[key] == pytest.approx(want[key], rel=0.1, abs=1e-3), key
    policy = GnnPolicy(checkpoint=str(tmp_path / "split" / "policy.pt"))
    assert policy.describe()["trained"]["updates"] == 2
    assert policy.lifecycle == "schedule", "trained as it was told, and run so"

    # the kept policies name the settings the training started with; a resume is the same
    # training, whatever `simic.updates` it goes on to (helper-found: the policies after it
    # carried another hash)
    def hashes(run) -> set[str]:
        kept = [run / "policy.pt", *sorted((run / "policies").iterdir())]
        return {GnnPolicy(checkpoint=str(p)).describe()["trained"]["config_hash"] for p in kept}

    (split_hash,) = hashes(tmp_path / "split")
    (straight_hash,) = hashes(tmp_path / "straight")
    assert len(split_hash) == 12 and split_hash != straight_hash, "started with updates=1, not 2"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (
            ('simic.imitate.teacher=["policy=heuristic","policy.patience=0"]',),
            "simic.imitate.teacher=['policy=heuristic', 'policy.patience=0']: policy.patience=0 "
            "must be at least 1",
        ),
        (('simic.imitate.teacher=[""]',), "simic.imitate.teacher: '' is not a teacher setting"),
        (
            ('simic.imitate.teacher=["policy=heuristic"]', "simic.imitate.episodes=true"),
            "simic.imitate.episodes=True: Input should be a valid integer",
        ),
        (  # an unescaped interpolation in the list: OmegaConf resolves it in train_policy
            ('simic.imitate.teacher=["policy=heuristic","policy.patience=${seed}"]',),
            "esper: simic.imitate.teacher[1]: Interpolation key 'seed' not found",
        ),
        (
            ('simic.imitate.teacher=["policy=heuristic"]', 'simic.overrides=["trainer.lr=1"]'),
            "esper: simic.overrides=['trainer.lr=1'] (policy=none): Could not override",
        ),
    ],
)
def test_a_bad_teacher_is_one_line_before_any_episode(tmp_path, overrides, named) -> None:
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    result = launch(
        tmp_path / "run",
        "simic.lifecycle=schedule",
        "simic.imitate.episodes=1",
        *overrides,
        env=env,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert named in result.stderr
    assert not (tmp_path / "kernels").exists(), "no episode ran"
    assert not (tmp_path / "run" / "weights").exists()


def test_a_refused_job_of_a_sweep_is_recorded_and_the_sweep_goes_on(tmp_path) -> None:
    """As for runs (run.py): each job is refused in its own line; the second still runs."""
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "-m",
            "--config-name",
            "train_policy",
            *TINY,
            "simic.lifecycle=schedule",
            "simic.imitate.episodes=1",
            'simic.imitate.teacher=["policy=heuristic","policy.warmup_epochs=5"]',
            "simic.episode_epochs=4,5",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, "a sweep with a failed job fails"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    refusals = [ln for ln in result.stderr.splitlines() if ln.startswith("esper:")]
    assert len(refusals) == 3, "each job's line, and Hydra's for the first job that failed"
    assert refusals[2] == refusals[0]
    for line, epochs in zip(refusals, (4, 5), strict=False):
        assert "cannot germinate before epoch 5 (policy.warmup_epochs=5" in line
        assert f"simic.episode_epochs={epochs}: nothing to imitate" in line
    assert not (tmp_path / "kernels").exists(), "no episode ran"


def test_a_policy_whose_weights_go_non_finite_is_not_saved(tmp_path) -> None:
    """A learning rate taken (finite) but far too large: the update makes every weight NaN.
    Before, the training saved that policy.pt and exited 0 (only loading it later refused)."""
    run_dir = tmp_path / "run"
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    result = launch(run_dir, "simic.updates=1", "simic.ppo.lr=1e30", env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("esper:")]
    assert said == [
        f"esper: the policy's weights are not finite after update 1 (loss/policy=nan, "
        f"loss/value=nan); no checkpoint was written in {run_dir}; a smaller simic.ppo.lr "
        "may train"
    ], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (run_dir / "policy.pt").exists() and not (run_dir / "simic.pt").exists()


def test_an_episode_that_diverges_ends_the_training_in_one_line(tmp_path) -> None:
    """helper-found: an episode's Diverged (or a worker killed) came back as a
    concurrent.futures traceback, without which episode or how to go on."""
    run_dir = tmp_path / "run"
    env = own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"))
    diverges = "simic.overrides=['trainer.optimizer.lr=1e30']"
    result = launch(run_dir, "simic.updates=1", "simic.episode_epochs=2", diverges, env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("esper:")]
    assert len(said) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert said[0].startswith(
        "esper: the policy training failed during update 1: the host-alone episode spirals "
        "['dataset=spirals', 'model=mlp', 'blueprints=vector', 'trainer.optimizer.lr=1e30'] "
        "seed 10"
    ), said
    assert "the host diverged: " in said[0]
    assert said[0].endswith("no checkpoint was written yet: run it again to start over")
