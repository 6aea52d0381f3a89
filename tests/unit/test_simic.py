"""Simic's parts on hand-made data: the reward, GAE, a PPO update, and one real episode."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from esper.atomic import WriteError, write_atomic
from esper.config import ConfigError
from esper.policy.gnn import GnnPolicy
from esper.policy.masks import OPERATIONS
from esper.seeds.graph_features import N_GLOBAL, N_NODE
from esper.simic import ppo
from esper.simic.episode import EpisodeSpec, run_episode
from esper.simic.reward import episode_reward, step_rewards
from esper.simic.settings import RewardConfig, SimicConfig, TaskConfig
from esper.simic.train import _advantages, _specs, check_output


def test_the_reward_is_the_gain_over_the_host_alone_less_the_parameter_cost() -> None:
    terms = episode_reward(0.90, 0.80, added_params=1000, per_1k_params=0.05)
    assert terms.gain == pytest.approx(0.10)
    assert terms.param_penalty == pytest.approx(0.05)
    assert terms.total == pytest.approx(0.05)
    nothing = episode_reward(0.80, 0.80, added_params=0)
    assert nothing.total == 0.0
    flops = episode_reward(0.8, 0.8, 0, added_flops=500, per_1k_flops=0.2)
    assert flops.total == pytest.approx(-0.1)
    assert step_rewards(3, terms.total) == [0.0, 0.0, pytest.approx(0.05)]
    assert step_rewards(0, terms.total) == []
    # helper-found: 1e200 overflowed float32 in PPO and was said as weights gone NaN
    for key in ("per_1k_params", "per_1k_flops"):
        with pytest.raises(ValueError, match="less than or equal to 1000"):
            RewardConfig(**{key: 1e200})


def test_group_advantages_compare_an_episode_with_the_rest_of_its_group() -> None:
    # group 0: rewards 0.1, 0.3, 0.5; group 1: 0.0, 0.2 (the groups' own levels cancel)
    advantages = ppo.group_advantages([0.1, 0.3, 0.5, 0.0, 0.2], [0, 0, 0, 1, 1])
    assert advantages == pytest.approx([0.1 - 0.4, 0.3 - 0.3, 0.5 - 0.2, -0.2, 0.2])
    shifted = ppo.group_advantages([1.1, 1.3, 1.5, 0.0, 0.2], [0, 0, 0, 1, 1])
    assert shifted == pytest.approx(advantages)
    with pytest.raises(ValueError, match="group 2 has one episode"):
        ppo.group_advantages([0.1, 0.2, 0.3], [1, 1, 2])


def test_gae_on_a_hand_made_trace() -> None:
    # gamma = lambda = 1: the advantage is the return minus the value
    assert ppo.gae([0.0, 0.0, 1.0], [0.5, 0.2, 0.4], 1.0, 1.0) == pytest.approx([0.5, 0.8, 0.6])
    # lambda = 0: one-step TD errors
    assert ppo.gae([0.0, 1.0], [0.5, 0.2], 1.0, 0.0) == pytest.approx([-0.3, 0.8])


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    """One real episode of a tiny task with the initial weights, its decisions recorded."""
    store = tmp_path_factory.mktemp("kernels")
    weights = tmp_path_factory.mktemp("w") / "policy.pt"
    GnnPolicy(seed=0, scatter_backend="torch").save_weights(weights, {})
    spec = EpisodeSpec(
        "spirals_mlp", ("dataset=spirals", "model=mlp", "blueprints=vector"), seed=100, epochs=6
    )
    return run_episode(spec, str(weights), str(store))


def test_an_episode_records_one_step_per_control_step(rollout) -> None:
    assert len(rollout.steps) == 6 and sum(rollout.actions.values()) == 6
    for step in rollout.steps:
        nodes = step.x.shape[0]
        assert step.x.shape[1] == N_NODE and step.u.shape == (1, N_GLOBAL)
        assert step.edge_index.max() < nodes and len(step.slot_index) == 2
        assert step.masks.operation[step.operation], "the recorded choice was legal"
        if step.slot >= 0:
            assert step.masks.slot[step.operation, step.slot]
        if OPERATIONS[step.operation] == "germinate":
            assert step.masks.blueprint[step.slot, step.blueprint]
        assert step.log_prob <= 0
    assert 0 <= rollout.val_accuracy <= 1


def test_under_the_schedule_an_episode_records_germination_choices_alone(tmp_path) -> None:
    weights = tmp_path / "policy.pt"
    GnnPolicy(seed=0, scatter_backend="torch", lifecycle="schedule").save_weights(weights, {})
    spec = EpisodeSpec(
        "spirals_mlp", ("dataset=spirals", "model=mlp", "blueprints=vector"), seed=100, epochs=6
    )
    episode = run_episode(spec, str(weights), str(tmp_path / "kernels"))
    assert len(episode.steps) == 6 and episode.actions["germinate"] >= 1
    for step in episode.steps:
        assert step.masks.operation.tolist() == [True, step.masks.operation[1].item(), *[False] * 3]
        assert OPERATIONS[step.operation] in ("wait", "germinate")
    assert episode.added_params > 0, "the schedule carried a seed on without the network"


def test_one_ppo_update_is_deterministic_and_improves_the_clipped_objective(rollout) -> None:
    steps = rollout.steps
    rewards = step_rewards(len(steps), episode_reward(0.9, 0.8, 0).total)
    values = [s.value for s in steps]
    advantages = ppo.gae(rewards, values, 1.0, 0.95)
    returns = [a + v for a, v in zip(advantages, values)]
    settings = ppo.PPOSettings(epochs=4, minibatch=3)

    def trained():
        net = copy.deepcopy(GnnPolicy(seed=0, scatter_backend="torch").net)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        generator = torch.Generator().manual_seed(0)
        stats = ppo.update(net, optimizer, steps, advantages, returns, settings, generator)
        return net, stats

    def surrogate(net) -> float:
        adv = torch.tensor(advantages)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        with torch.no_grad():
            new = torch.stack([ppo.evaluate(net, s)[0] for s in steps])
        ratio = (new - torch.tensor([s.log_prob for s in steps])).exp()
        clipped = ratio.clamp(1 - settings.clip, 1 + settings.clip)
        return float(torch.min(ratio * adv, clipped * adv).mean())

    before = surrogate(GnnPolicy(seed=0, scatter_backend="torch").net)
    (net_a, stats_a), (net_b, stats_b) = trained(), trained()
    for a, b in zip(net_a.parameters(), net_b.parameters()):
        assert torch.equal(a, b), "same data, same seed: the same update"
    assert stats_a == stats_b
    assert surrogate(net_a) > before, "the update raised the clipped objective"


def _settings(group_size: int) -> SimicConfig:
    return SimicConfig(
        tasks=[TaskConfig(name="spirals", overrides=["dataset=spirals"])],
        train_seeds=[100],
        episode_epochs=6,
        episodes_per_update=2,
        group_size=group_size,
        updates=1,
    )


def test_an_update_credits_each_decision_with_its_episodes_advantage(rollout) -> None:
    """Both advantage paths of the training loop, on two copies of one real episode whose
    rewards differ by 0.2: grouped, every decision of the better one gets +0.2 and of the
    worse -0.2, and values are fit to the rewards; ungrouped, each episode is GAE alone."""
    episodes = [rollout, copy.deepcopy(rollout)]
    n = len(rollout.steps)
    steps, advantages, returns = _advantages(_settings(2), episodes, [0.3, 0.1])
    assert len(steps) == 2 * n
    assert advantages == pytest.approx([0.2] * n + [-0.2] * n)
    assert returns == pytest.approx([0.3] * n + [0.1] * n)
    steps, advantages, returns = _advantages(_settings(1), episodes, [0.3, 0.1])
    values = [s.value for s in rollout.steps]
    first = ppo.gae(step_rewards(n, 0.3), values, 1.0, 0.95)
    assert advantages[:n] == pytest.approx(first)
    assert returns[:n] == pytest.approx([a + v for a, v in zip(first, values)])


def test_groups_draw_tasks_by_their_weights() -> None:
    """A task of weight 3 gets about three groups for each of a weight-1 task's, every group
    is whole (one task, host and seed), and a task of weight 0 is refused."""
    settings = SimicConfig(
        tasks=[
            TaskConfig(name="often", overrides=["dataset=spirals"], weight=3.0),
            TaskConfig(name="seldom", overrides=["dataset=digits"]),
        ],
        train_seeds=[100, 101],
        episode_epochs=6,
        episodes_per_update=8,
        group_size=4,
        updates=1,
    )
    rng = random.Random(0)
    drawn = [_specs(settings, rng) for _ in range(400)]
    groups = [specs[i : i + 4] for specs in drawn for i in (0, 4)]
    assert all(len({(s.task, s.overrides, s.seed) for s in group}) == 1 for group in groups)
    often = sum(group[0].task == "often" for group in groups) / len(groups)
    assert often == pytest.approx(0.75, abs=0.04)
    with pytest.raises(ValueError, match="weight"):
        TaskConfig(name="never", overrides=[], weight=0)
    # helper-found: two tasks of one name made every line that names a task ambiguous
    with pytest.raises(
        ValueError,
        match=r"simic\.tasks: more than one task is named 'often' and 'seldom'; allowed: a dis",
    ):
        SimicConfig.model_validate(
            {**settings.model_dump(), "tasks": [t.model_dump() for t in (*settings.tasks,)] * 2}
        )


@pytest.mark.parametrize(
    ("seed", "said"),
    [(s, rf"kept for evaluation.*remove \[{s}\]") for s in (3, 7, 12, 17, 22, 33, 55, 71)]
    # every seed is checked (only the first was: [100, -1] trained until an episode drew -1)
    + [(-1, r"train_seeds\.1"), (2**32, r"train_seeds\.1")]
    # helper-found: [100, 100] was taken; imitation's distinct runs were one run twice
    + [(100, r"simic\.train_seeds=\[100, 100\] repeats \[100\]; allowed: distinct seeds")],
)
def test_every_training_seed_is_checked_and_stays_off_evaluation_seeds(
    seed: int, said: str
) -> None:
    with pytest.raises(ValueError, match=said):
        SimicConfig(
            tasks=[TaskConfig(name="spirals", overrides=[])],
            train_seeds=[100, seed],
            episode_epochs=6,
            episodes_per_update=1,
            updates=1,
        )


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("ppo", {"lr": math.inf}),
        ("reward", {"per_1k_params": math.inf}),
        ("ppo", {"clip": math.nan}),
    ],
)
def test_infinite_or_nan_settings_are_refused(section: str, value: dict[str, float]) -> None:
    """simic.ppo.lr=inf trained a policy of NaN weights and saved it, exit 0."""
    with pytest.raises(ValueError, match="finite number"):
        SimicConfig.model_validate(
            {
                "tasks": [{"name": "spirals", "overrides": [], "weight": 1.0}],
                "train_seeds": [100],
                "episode_epochs": 6,
                "episodes_per_update": 1,
                "updates": 1,
                section: value,
            }
        )
    with pytest.raises(ValueError, match="finite number"):
        TaskConfig(name="spirals", overrides=[], weight=math.inf)


def test_the_config_hash_names_what_shapes_training() -> None:
    """Where a run resumes from or writes to leaves the hash alone; a reward setting moves it."""
    base = _settings(2)
    moved = base.model_copy(update={"resume": "elsewhere", "output": "out.pt"})
    assert moved.config_hash() == base.config_hash()
    cheaper = base.model_copy(update={"reward": RewardConfig(per_1k_params=0.02)})
    assert cheaper.config_hash() != base.config_hash()
    assert len(base.config_hash()) == 12


def test_a_resume_names_each_setting_that_changed_since_the_run_it_continues() -> None:
    trained = _settings(2).resumable()
    further = _settings(2).model_copy(
        update={"updates": 99, "resume": "run", "output": "p.pt", "workers": 7, "overwrite": True}
    )
    assert further.changed_since(trained) == [], "going further is what a resume is for"
    spread = _settings(2).model_copy(update={"checkpoint_every": 3})
    saved_with_them = {**trained, "workers": 2, "checkpoint_every": 1}  # simic.pt before 2026-12
    assert spread.changed_since(saved_with_them) == [], "how work is spread changes no number"
    threads = _settings(2).model_copy(update={"worker_threads": 2})
    assert threads.changed_since(trained) == ["simic.worker_threads: 1 -> 2"]
    cheaper = _settings(2).model_copy(update={"reward": RewardConfig(per_1k_params=0.02)})
    assert cheaper.changed_since(trained) == ["simic.reward.per_1k_params: 0.05 -> 0.02"]


def test_run_overrides_reach_every_episode_and_name_a_new_training() -> None:
    """`simic.overrides` (e.g. the shadow protocol) follow each episode's task overrides; they
    move the config hash, and a run from before the key existed resumes as unchanged."""
    base = _settings(2)
    shadowed = base.model_copy(update={"overrides": ["seeds.contribution=shadow"]})
    specs = _specs(shadowed, random.Random(0))
    assert [s.overrides for s in specs] == [("dataset=spirals", "seeds.contribution=shadow")] * 2
    assert shadowed.config_hash() != base.config_hash()
    before_the_key = base.resumable()
    del before_the_key["overrides"]
    assert base.changed_since(before_the_key) == []
    assert shadowed.changed_since(before_the_key) == [
        "simic.overrides: [] -> ['seeds.contribution=shadow']"
    ]


def test_the_shipped_training_command_still_hashes_as_the_run_experiments_cite() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tests.conftest import CONF

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train_policy")
    settings = SimicConfig(**OmegaConf.to_container(cfg.simic, resolve=True))  # type: ignore[arg-type]
    assert settings.config_hash() == "95d2d98c3292"  # gnn.pt's run (experiments/gnn_policy.md)


def test_a_simic_output_that_cannot_be_written_is_refused_before_training(tmp_path) -> None:
    """It failed with a traceback once every update had run (a directory; a path through a
    file, where write_atomic's clean-up then hid the real error)."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a directory; allowed: a file path"):
        check_output(str(tmp_path))
    with pytest.raises(ConfigError, match="cannot write there"):
        check_output(str(tmp_path / "file" / "policy.pt"))
    check_output(str(tmp_path / "new" / "policy.pt"))  # a new directory is made
    assert list((tmp_path / "new").iterdir()) == [], "the probe leaves nothing"
    with pytest.raises(WriteError, match="cannot write .*policy.pt"):
        write_atomic(tmp_path / "file" / "policy.pt", b"weights")


def test_a_simic_output_that_would_replace_the_trainings_own_files_is_refused(tmp_path) -> None:
    """helper-found: simic.output=<run>/simic.pt replaced the training's checkpoint with a
    policy, exit 0; a resume and the learning curve then refused the directory."""
    from esper.policy.gnn import GnnPolicy

    run = tmp_path / "run"
    (run / "policies").mkdir(parents=True)
    for own in ("simic.pt", "policies/update_5.pt"):
        with pytest.raises(ConfigError, match="is the training's own"):
            check_output(str(run / own), run)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds a file that is not a GNN policy; allowed: a new"):
        check_output(str(tmp_path / "notes.txt"), run)
    GnnPolicy(scatter_backend="torch").save_weights(tmp_path / "old.pt", {})
    check_output(str(tmp_path / "old.pt"), run)  # a policy is replaced
    check_output(str(run / "final.pt"), run)  # the run directory, not its own files


def test_composing_an_episode_keeps_the_jobs_name() -> None:
    """helper-found: in a sweep of the training command, the jobs after the first logged to
    app.log, named `app`: composing an episode's run (the suite check) set Hydra's job name."""
    from hydra.core.utils import JobRuntime

    from esper.simic.episode import compose_run

    runtime = JobRuntime.instance()
    before = runtime.get("name")
    runtime.set("name", "run")
    try:
        compose_run(["policy=none"])
        assert runtime.get("name") == "run"
    finally:
        runtime.set("name", before)
