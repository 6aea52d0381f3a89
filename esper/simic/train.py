"""The training loop (`python run.py --config-name train_policy`): episodes in worker
processes, rewards against the host alone, a PPO update, logs, and an atomic checkpoint.

Read it top to bottom like a CleanRL script: each update draws episodes (task, host variant,
training seed) from a seeded generator, runs them with the current weights beside the
baselines it has not run yet, turns final validation accuracies into rewards, and updates.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from esper.atomic import ReadError, WriteError, load_torch, save_torch
from esper.config import ConfigError, reason
from esper.events.wandb_file import RunFileError, read_run
from esper.kernels.worker import worker_pool
from esper.policy.gnn import FORMAT as POLICY_FORMAT
from esper.policy.gnn import GnnPolicy, Step
from esper.policy.gnn_net import PolicyNet
from esper.policy.masks import OPERATIONS
from esper.policy.scatter_choice import ScatterBackends
from esper.preflight import RUN_FILES, check_run_dir, clear_run, resumed_dir
from esper.simic import ppo
from esper.simic.episode import (
    EpisodeResult,
    EpisodeSpec,
    check_suite,
    receive,
    run_in_worker,
)
from esper.simic.imitation import check_teacher, imitation_epoch
from esper.simic.reward import RewardTerms, episode_reward, step_rewards
from esper.simic.settings import SimicConfig
from esper.training.guard import Diverged
from esper.training.interruption import raise_interrupt

log = logging.getLogger(__name__)
FORMAT = "esper-simic/1"


def _specs(settings: SimicConfig, rng: random.Random) -> list[EpisodeSpec]:
    """The update's episodes: groups of `group_size` on one drawn task (by the tasks'
    weights), host variant and training seed, each episode with its own policy sampling seed."""
    specs = []
    weights = [task.weight for task in settings.tasks]
    for _ in range(settings.episodes_per_update // settings.group_size):
        task = rng.choices(settings.tasks, weights)[0]
        variant = rng.choice(task.variants)
        seed = rng.choice(settings.train_seeds)
        for _ in range(settings.group_size):
            specs.append(
                EpisodeSpec(
                    task.name,
                    (*task.overrides, *variant, *settings.overrides),
                    seed,
                    settings.episode_epochs,
                    policy_seed=rng.randrange(2**31),
                )
            )
    return specs


def _baseline_key(spec: EpisodeSpec) -> str:
    return f"{spec.task}|{' '.join(spec.overrides)}|{spec.seed}|{spec.epochs}"


class EpisodeFailed(Exception):
    """An episode ended in a worker without a result: its run diverged, its worker died (the
    OOM killer), or it could not write. helper-found: a traceback of concurrent.futures, no
    word of which episode or how to go on."""

    def __init__(self, spec: EpisodeSpec, role: str, cause: BaseException) -> None:
        self.spec, self.role, self.cause = spec, role, cause
        said = reason(cause)
        if isinstance(cause, BrokenProcessPool):
            said = "its worker process ended abruptly (killed: out of memory?)"
        super().__init__(
            f"{role} episode {spec.task} {list(spec.overrides)} seed {spec.seed}: {said}"
        )


EPISODE_FAILURES = (Diverged, BrokenProcessPool, WriteError)
"""What ends an episode that is not Esper's bug (a bug's traceback stays a traceback)."""


def _result(job: Future[bytes], spec: EpisodeSpec, role: str) -> EpisodeResult:
    """An episode's result, or EpisodeFailed naming it."""
    try:
        return receive(job.result())
    except EPISODE_FAILURES as exc:
        raise EpisodeFailed(spec, role, exc) from exc


def _beside_baselines(
    specs: list[EpisodeSpec],
    pool: Any,
    weights: Path,
    store: str,
    threads: int,
    baselines: dict[str, float],
    teacher: tuple[str, ...] = (),
) -> list[Future[bytes]]:
    """The episodes of `specs`, started in the workers under the policy's `weights` (with a
    `teacher`, it decides and the policy records), and the host alone beside them for every
    task, host and seed not seen before; its val accuracy is kept in `baselines` (the
    reward's reference) before the episodes' jobs are returned."""
    missing = {_baseline_key(s): s for s in specs if _baseline_key(s) not in baselines}
    base_jobs = {
        key: pool.submit(run_in_worker, spec, None, store, threads) for key, spec in missing.items()
    }
    jobs = [pool.submit(run_in_worker, s, str(weights), store, threads, teacher) for s in specs]
    for key, job in base_jobs.items():
        baselines[key] = _result(job, missing[key], "the host-alone").val_accuracy
    return jobs


def _episodes(
    specs: list[EpisodeSpec],
    pool: Any,
    weights: Path,
    store: str,
    threads: int,
    baselines: dict[str, float],
) -> list[EpisodeResult]:
    """The update's episodes, run in the workers under the policy's current `weights`; the
    host alone's val accuracy of any task, host and seed not seen before is run beside them
    and kept in `baselines` (the reward's reference)."""
    jobs = _beside_baselines(specs, pool, weights, store, threads, baselines)
    return [_result(job, spec, "the policy's") for job, spec in zip(jobs, specs, strict=True)]


def _row(
    update: int,
    episodes: list[EpisodeResult],
    terms: list[RewardTerms],
    decisions: int,
    stats: ppo.UpdateStats,
) -> dict[str, float]:
    """What an update logs (W&B, the history in simic.pt, the learning curve): the episodes'
    mean reward and its terms, the PPO statistics and each operation's share of `decisions`."""
    actions = dict.fromkeys(OPERATIONS, 0)
    for episode in episodes:
        for name, count in episode.actions.items():
            actions[name] += count
    return {
        "update": float(update),
        "episode/return": sum(t.total for t in terms) / len(terms),
        "episode/val_gain": sum(t.gain for t in terms) / len(terms),
        "episode/added_params": sum(e.added_params for e in episodes) / len(episodes),
        "loss/policy": stats.policy_loss,
        "loss/value": stats.value_loss,
        "loss/entropy": stats.entropy,
        "loss/approx_kl": stats.approx_kl,
        "loss/clip_fraction": stats.clip_fraction,
        "loss/explained_variance": stats.explained_variance,
        **{f"decisions/{k}": v / max(1, decisions) for k, v in actions.items()},
    }


def _advantages(
    settings: SimicConfig, episodes: list[EpisodeResult], rewards: list[float]
) -> tuple[list[Step], list[float], list[float]]:
    """Every decision of the update with its advantage and the return its value is fit to:
    group-relative (the episode's, at each of its decisions) or GAE over the value head."""
    steps: list[Step] = []
    advantages: list[float] = []
    returns: list[float] = []
    if settings.group_size > 1:
        groups = [i // settings.group_size for i in range(len(episodes))]
        relative = ppo.group_advantages(rewards, groups)
    for i, (episode, reward) in enumerate(zip(episodes, rewards, strict=True)):
        n = len(episode.steps)
        if settings.group_size > 1:
            advantages += [relative[i]] * n
            returns += [reward] * n
        else:
            values = [s.value for s in episode.steps]
            adv = ppo.gae(
                step_rewards(n, reward), values, settings.ppo.gamma, settings.ppo.gae_lambda
            )
            advantages += adv
            returns += [a + v for a, v in zip(adv, values, strict=True)]
        steps += episode.steps
    return steps, advantages, returns


STATE_KEYS = (
    "update",
    "settings",
    "weights",
    "optimizer",
    "generator",
    "rng",
    "baselines",
    "history",
)
"""What simic.pt holds beside its header (`save` in train())."""
STATE_TYPES: dict[str, type | tuple[type, ...]] = {
    "update": int,
    "settings": dict,
    "weights": dict,
    "optimizer": dict,
    "baselines": dict,
    "history": list,
    "rng": (list, tuple),
}


def load_state(where: str, key: str, after: str) -> dict[str, Any]:
    """The simic.pt of a training (`where`: its directory or the file), checked: ConfigError in
    one line beginning with `key`, ending with `after` where the training stopped before its
    first checkpoint (what the caller cannot then do). A resume and the learning curve read it."""
    path = Path(where).expanduser()
    path = path if path.is_file() or path.suffix == ".pt" else path / "simic.pt"
    if not path.exists() and not path.is_symlink() and (path.parent / "weights").is_dir():
        raise ConfigError(
            f"{key}: the run stopped before its first checkpoint (no {path.name}: during "
            f"imitation, or before its first simic.checkpoint_every updates); {after}"
        )
    run_files = [name for name in RUN_FILES if (path.parent / name).exists()]
    if not path.exists() and run_files:  # helper-found: "No such file or directory" alone
        raise ConfigError(
            f"{key}: {path.parent} holds a run ({', '.join(run_files)}), not a policy "
            "training (no simic.pt)"
        )
    try:
        state = load_torch(path)
    except ReadError as exc:
        raise ConfigError(f"{key}: not a Simic checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{key}: not a Simic checkpoint (no {FORMAT} header)")
    missing = [name for name in STATE_KEYS if name not in state]
    if missing:
        raise ConfigError(f"{key}: a damaged Simic checkpoint (no {', '.join(missing)})")
    for name, kind in STATE_TYPES.items():
        if not isinstance(state[name], kind) or isinstance(state[name], bool):
            raise ConfigError(
                f"{key}: a damaged Simic checkpoint ({name} is a {type(state[name]).__name__})"
            )
    wrong = _history_wrong(state["update"], state["history"])
    if wrong:  # helper-found: update -5 resumed to "-250%"; a row without a number broke the
        raise ConfigError(f"{key}: a damaged Simic checkpoint ({wrong})")  # curve, not a resume
    return state


CURVE_PANELS = (
    ("episode/return", "mean episode reward"),
    ("episode/val_gain", "val accuracy over the host alone"),
    ("episode/added_params", "parameters added"),
    ("loss/explained_variance", "value head: explained variance"),
    ("loss/entropy", "policy entropy"),
)
"""The numbers of a history row (`_row`) the learning curve draws, each with its panel's title
(`esper.simic.curve`)."""

HISTORY_NUMBERS = ("update", *(key for key, _ in CURVE_PANELS))
"""What every history row must hold as a number for a resume to continue it (and the curve to
draw it)."""


def _history_wrong(update: int, rows: list[Any]) -> str | None:
    """What is wrong with a checkpoint's update count and history (a row an update), or None."""
    if update < 0 or len(rows) != update:
        return f"update {update} with {len(rows)} history rows"
    for row in rows:
        if not isinstance(row, dict):
            return f"a history row is a {type(row).__name__}"
        lacking = [
            k
            for k in HISTORY_NUMBERS
            if not isinstance(row.get(k), int | float) or isinstance(row.get(k), bool)
        ]
        if lacking:
            return f"a history row lacks a number for {', '.join(lacking)}"
    return None


def resume_state(settings: SimicConfig) -> dict[str, Any]:
    """The checkpoint `simic.resume` names, once it is known to continue this training: the same
    settings but `updates`, which may only grow (a resume to fewer updates than were done would
    do nothing and label update N's weights as an earlier one's)."""
    assert settings.resume is not None
    state = load_state(
        settings.resume,
        f"simic.resume={settings.resume!r}",
        "nothing to continue: run it again without simic.resume",
    )
    changed = settings.changed_since(state["settings"])
    if changed:
        raise ConfigError(
            f"simic.resume={settings.resume!r} continues a training with other settings "
            f"({'; '.join(changed)}); only simic.updates, simic.workers, "
            "simic.checkpoint_every and simic.output may change on a resume"
        )
    done = state["update"]
    if settings.updates < done or (settings.updates == done and not settings.output):
        # helper-found: as many updates as were done exited 0 having done nothing, and into
        # another directory left one that could not be resumed (nothing was saved there)
        raise ConfigError(
            f"simic.updates={settings.updates}: the training resumed has done {done} updates; "
            f"allowed: {done + 1} or more ({done} with simic.output=PATH writes its policy)"
        )
    backends = ScatterBackends().choose("torch", torch.device("cpu"), 1, settings.hidden)
    net = PolicyNet(settings.hidden, settings.layers, backends)  # scratch parts, to try it on
    restore(state, settings, net, torch.optim.Adam(net.parameters()), torch.Generator())
    return state


def restore(
    state: dict[str, Any],
    settings: SimicConfig,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> random.Random:
    """Load the checkpoint into the training's parts; its sampling generator is returned. A
    part that does not load is a damaged checkpoint, said in one line (resume_state tries it on
    scratch parts first, before Hydra records the command)."""
    try:
        net.load_state_dict(state["weights"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        version, internal, gauss = state["rng"]
        rng = random.Random()
        rng.setstate((version, tuple(internal), gauss))
        for key, value in state["baselines"].items():
            if not isinstance(key, str) or not isinstance(value, float | int):
                raise TypeError(f"baselines hold {key!r}: {value!r}")
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"simic.resume={settings.resume!r}: a damaged Simic checkpoint ({reason(exc)})"
        ) from None
    return rng


def _logged_updates(resume: str, run_id: str | None) -> set[int]:
    """The updates the resumed training had logged to W&B (in its run directory's wandb/,
    under its run id), those after its last checkpoint included: a resume runs them again but
    must not log them a second time (the W&B curve had update 2 twice)."""
    if run_id is None:
        return set()
    try:
        rows = read_run(resumed_dir(resume) / "wandb", run_id).history
    except (RunFileError, OSError):
        return set()
    return {int(row["update"]) for row in rows if isinstance(row.get("update"), int | float)}


def _go_on(saved: int | None, run_dir: Path) -> str:
    if saved is None:
        return "no checkpoint was written yet: run it again to start over"
    return f"simic.resume={str(run_dir)!r} continues from update {saved}, its last checkpoint"


class Stopped(Exception):
    """A policy training interrupted by SIGINT or SIGTERM: where, and how to go on. The
    training stops at once (an update's episodes are minutes that a resume runs again)."""

    def __init__(self, signum: int, at: str, saved: int | None, run_dir: Path) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name} during {at}; {_go_on(saved, run_dir)}")


class TrainingFailed(Exception):
    """The policy training ended by an episode that failed (EpisodeFailed): which, where, and
    how to go on, in one line."""

    def __init__(self, failed: EpisodeFailed, at: str, saved: int | None, run_dir: Path):
        super().__init__(
            f"the policy training failed during {at}: {failed}; {_go_on(saved, run_dir)}"
        )


class PolicyDiverged(Exception):
    """The policy's weights are no longer finite (a learning rate far too large): the training
    ends as failed, nothing of that policy is saved, and the last checkpoint stays as it was.
    Before, it went on and saved a policy.pt of NaN weights, and exited 0."""

    def __init__(self, after: str, losses: str, saved: int | None, run_dir: Path, lr: str):
        go_on = (
            f"its last checkpoint (update {saved}) is kept"
            if saved is not None
            else "no checkpoint was written"
        )
        super().__init__(
            f"the policy's weights are not finite after {after} ({losses}); {go_on} in "
            f"{run_dir}; a smaller {lr} may train"
        )


def check_finite(
    net: torch.nn.Module, after: str, losses: dict[str, float], where: dict[str, Any], lr: str
) -> None:
    """Raise PolicyDiverged if any weight of `net` is NaN or infinite."""
    if all(bool(torch.isfinite(p).all()) for p in net.parameters()):
        return
    said = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
    raise PolicyDiverged(after, said, where["saved"], where["dir"], lr)


def _imitation_specs(settings: SimicConfig) -> list[EpisodeSpec]:
    """`simic.imitate.episodes` distinct (task, host, training seed) runs, in a seeded order
    of their own (the PPO updates draw the same episodes as without imitation)."""
    every = [
        EpisodeSpec(
            task.name,
            (*task.overrides, *variant, *settings.overrides),
            seed,
            settings.episode_epochs,
        )
        for task in settings.tasks
        for variant in task.variants
        for seed in settings.train_seeds
    ]
    random.Random(f"imitate/{settings.seed}").shuffle(every)
    return every[: settings.imitate.episodes]


def _imitate(
    settings: SimicConfig,
    policy: GnnPolicy,
    pool: Any,
    store: str,
    baselines: dict[str, float],
    sink: Any,
) -> dict[str, float]:
    """Teacher episodes, then `simic.imitate.epochs` passes of imitation on their steps
    (esper.simic.imitation); returns what it logged last."""
    imitate = settings.imitate
    weights = Path(store).parent / "weights" / "initial.pt"
    policy.save_weights(weights, {"update": 0, "imitation": "teacher episodes"})
    specs = _imitation_specs(settings)
    threads, teacher = settings.worker_threads, tuple(imitate.teacher)
    jobs = _beside_baselines(specs, pool, weights, store, threads, baselines, teacher)
    episodes = [
        _result(job, spec, "a teacher")
        for job, spec in zip(
            tqdm(jobs, desc="teacher episodes", dynamic_ncols=True), specs, strict=True
        )
    ]
    steps: list[Step] = []
    returns: list[float] = []
    terms = []
    for episode in episodes:
        term = episode_reward(
            episode.val_accuracy,
            baselines[_baseline_key(episode.spec)],
            episode.added_params,
            episode.added_flops,
            settings.reward.per_1k_params,
            settings.reward.per_1k_flops,
        )
        terms.append(term)
        steps += episode.steps
        returns += [term.total] * len(episode.steps)
    n = len(episodes)
    germinations = sum(e.actions["germinate"] for e in episodes)
    growing = sum(1 for e in episodes if e.actions["germinate"])
    (log.info if germinations else log.warning)(
        "simic: the teacher germinated %d seeds, in %d of %d episodes (%+.4f val accuracy, "
        "%.0f parameters added on average)%s",
        germinations,
        growing,
        n,
        sum(t.gain for t in terms) / n,
        sum(e.added_params for e in episodes) / n,
        "" if germinations else ": the student can only learn to wait",
    )
    teacher_row = {
        "imitate/teacher_return": sum(t.total for t in terms) / n,
        "imitate/teacher_val_gain": sum(t.gain for t in terms) / n,
        "imitate/teacher_added_params": sum(e.added_params for e in episodes) / n,
        "imitate/teacher_germinate": germinations / max(1, len(steps)),
        "imitate/steps": float(len(steps)),
    }
    log.info("simic: imitating %s on %d steps of %d episodes", " ".join(teacher), len(steps), n)
    optimizer = torch.optim.Adam(policy.net.parameters(), lr=imitate.lr)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    row: dict[str, float] = {}
    for epoch in tqdm(range(imitate.epochs), desc="imitation", dynamic_ncols=True):
        stats = imitation_epoch(
            policy.net,
            optimizer,
            steps,
            returns,
            imitate.minibatch,
            settings.ppo.value_coef,
            settings.ppo.max_grad_norm,
            generator,
        )
        row = {
            "imitate/epoch": float(epoch),
            "imitate/loss": stats.loss,
            "imitate/value_loss": stats.value_loss,
            "imitate/teacher_probability": stats.teacher_probability,
            **(teacher_row if epoch == 0 else {}),
        }
        if sink is not None:
            sink.run.log(row)
    log.info(
        "simic: after imitation the policy gives the teacher's decisions %.3f on average "
        "(NLL %.3f)",
        row["imitate/teacher_probability"],
        row["imitate/loss"],
    )
    return {**teacher_row, **row}


def check_output(output: str, run_dir: Path | None = None) -> None:
    """`simic.output` is written after the last update: a path that cannot take it is refused
    now (it failed with a traceback once every update had run), and so is one that would
    replace the training's own checkpoint or kept policies, or a file that is not a policy
    (helper-found: `simic.output=<run>/simic.pt` exited 0 with the training's checkpoint
    replaced by a policy: it could not be resumed, nor its curve drawn)."""
    path = Path(output).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"simic.output={output!r} is a directory; allowed: a file path, e.g. "
            f"{str(path / 'policy.pt')!r}"
        )
    if run_dir is not None:
        own = run_dir.expanduser().resolve()
        target = path.resolve()
        if target == own / "simic.pt" or target.is_relative_to(own / "policies"):
            raise ConfigError(
                f"simic.output={output!r} is the training's own "
                f"{'checkpoint' if target.name == 'simic.pt' else 'kept policy'}; allowed: a "
                f"path outside {own / 'simic.pt'} and {own / 'policies'}"
            )
    if path.is_file():
        try:
            held = load_torch(path)
        except ReadError:
            held = None
        if not (isinstance(held, dict) and held.get("format") == POLICY_FORMAT):
            raise ConfigError(
                f"simic.output={output!r} holds a file that is not a GNN policy; allowed: a new "
                "path, or a policy checkpoint to replace"
            )
    probe = path.with_name(path.name + ".tmp")  # write_atomic's own temporary name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"simic.output={output!r}: cannot write there ({reason(exc)})") from None


def carry_over(resumed: Path, run_dir: Path, done: int) -> None:
    """A training resumed into another directory takes the resumed one's kernel store and its
    kept policies up to `done` (the update it continues from). helper-found: with a fresh store
    every kernel was compiled and timed again, the timings entered the policy's observations,
    and the curve parted from the one the training would have had in its own directory from
    the first update resumed; and policies/ held only the updates after `done`, so choosing
    among them missed the earlier ones. The resumed directory is only read."""
    if resumed.resolve() == run_dir.resolve():
        return
    carried = []
    if (resumed / "kernels").is_dir():
        shutil.copytree(
            resumed / "kernels",
            run_dir / "kernels",
            ignore=shutil.ignore_patterns("claims"),  # a claim is its process's own
            dirs_exist_ok=True,
        )
        carried.append("its kernel store")
    kept = [
        path
        for path in sorted((resumed / "policies").glob("update_*.pt"))
        if path.stem.removeprefix("update_").isdigit()
        and int(path.stem.removeprefix("update_")) <= done
    ]
    if kept:
        (run_dir / "policies").mkdir(parents=True, exist_ok=True)
        for path in kept:
            shutil.copy2(path, run_dir / "policies" / path.name)
        carried.append(f"its {len(kept)} kept policies (policies/update_*.pt, to update {done})")
    if carried:
        log.info(
            "simic: resumed into %s: copied %s from %s", run_dir, " and ".join(carried), resumed
        )


def train(settings: SimicConfig, run_dir: Path, config: dict[str, Any], logger: Any) -> float:
    """Train; returns the mean episode reward of the last update."""
    if settings.output:
        check_output(settings.output, run_dir)
    if not settings.resume:  # before any output, W&B run or episode
        check_suite(settings)
        if settings.imitate.episodes:
            check_teacher(settings)
    state = resume_state(settings) if settings.resume else None
    if check_run_dir(run_dir, settings.resume, settings.overwrite, "simic"):
        clear_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # one training, one hash: a resume keeps the one its training started with (helper-found:
    # `simic.updates`, `workers` or `checkpoint_every`, which a resume may change, gave the
    # policies kept after it another hash than those before)
    started = state.get("config_hash") if state is not None else None
    config_hash = started if isinstance(started, str) else settings.config_hash()
    log.info("simic: config hash %s, %s updates, into %s", config_hash, settings.updates, run_dir)
    store = str(run_dir / "kernels")
    if state is not None:
        carry_over(resumed_dir(str(settings.resume)), run_dir, int(state["update"]))
    policy = GnnPolicy(
        seed=settings.seed,
        hidden=settings.hidden,
        layers=settings.layers,
        scatter_backend="torch",
        lifecycle=settings.lifecycle,
    )
    net = policy.net
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.ppo.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    baselines: dict[str, float] = {}
    history: list[dict[str, float]] = []
    start, wandb_id = 0, None
    imitation: dict[str, float] = {}
    logged: set[int] = set()
    if state is not None:
        rng = restore(state, settings, net, optimizer, generator)
        baselines, history = dict(state["baselines"]), list(state["history"])
        imitation = dict(state.get("imitation") or {})
        start, wandb_id = state["update"], state.get("wandb_run_id")
        logged = _logged_updates(str(settings.resume), wandb_id)
        log.info("simic: the policy, optimizer and generators continue %s", settings.resume)
    sink = logger(run_dir=str(run_dir), config=config, run_id=wandb_id) if logger else None
    if sink is not None:  # updates a killed process had not handed to W&B yet: from simic.pt
        for row in history:
            if int(row["update"]) not in logged:
                sink.run.log(row)
                logged.add(int(row["update"]))
    ppo_settings = ppo.PPOSettings(
        clip=settings.ppo.clip,
        epochs=settings.ppo.epochs,
        minibatch=settings.ppo.minibatch,
        value_coef=settings.ppo.value_coef,
        entropy_coef=settings.ppo.entropy_coef,
        max_grad_norm=settings.ppo.max_grad_norm,
    )
    weights = run_dir / "weights" / "current.pt"
    threads = settings.worker_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores and settings.workers * threads > cores:  # helper-found: said nowhere
        log.warning(
            "simic.workers=%d x simic.worker_threads=%d = %d threads on %d cores: an update "
            "may be many times slower (46x measured, 2 x 2 on 2 cores)",
            settings.workers,
            threads,
            settings.workers * threads,
            cores,
        )
    last_reward = float("nan")
    where: dict[str, Any] = {  # what the stop line says: the last checkpoint is in "dir"
        "at": "the start",
        "saved": start if state is not None else None,
        "dir": resumed_dir(settings.resume) if settings.resume else run_dir,
    }

    def save(done: int) -> None:
        """simic.pt (to resume from), and the policy: the latest and one per checkpoint."""
        where["saved"], where["dir"] = done, run_dir
        save_torch(
            {
                "format": FORMAT,
                "update": done,
                "config_hash": config_hash,
                "settings": settings.resumable(),
                "weights": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "rng": list(rng.getstate()),
                "baselines": baselines,
                "history": history,
                "imitation": imitation,
                "wandb_run_id": sink.run_id if sink is not None else None,
            },
            run_dir / "simic.pt",
        )
        last = history[-1] if history else imitation
        for path in (run_dir / "policy.pt", run_dir / "policies" / f"update_{done}.pt"):
            policy.save_weights(
                path, {"updates": done, "config_hash": config_hash, "history": last}
            )

    main_thread = threading.current_thread() is threading.main_thread()
    on_sigterm = signal.signal(signal.SIGTERM, raise_interrupt) if main_thread else None
    try:
        with worker_pool(settings.workers) as pool:
            if settings.imitate.episodes and not settings.resume:
                where["at"] = "imitation"
                imitation = _imitate(settings, policy, pool, store, baselines, sink)
                losses = {k: v for k, v in imitation.items() if "loss" in k}
                check_finite(net, "imitation", losses, where, "simic.imitate.lr")
                save(0)  # update_0.pt: the policy imitation alone gives
            bar = tqdm(
                range(start, settings.updates),
                initial=start,
                total=settings.updates,
                desc="updates",
                dynamic_ncols=True,
            )
            for update in bar:
                where["at"] = f"update {update + 1}"  # counted from 1, as policies/update_N.pt
                started = time.perf_counter()
                policy.save_weights(weights, {"update": update})
                episodes = _episodes(
                    _specs(settings, rng), pool, weights, store, threads, baselines
                )
                terms = [
                    episode_reward(
                        e.val_accuracy,
                        baselines[_baseline_key(e.spec)],
                        e.added_params,
                        e.added_flops,
                        settings.reward.per_1k_params,
                        settings.reward.per_1k_flops,
                    )
                    for e in episodes
                ]
                rewards = [t.total for t in terms]
                steps, advantages, returns = _advantages(settings, episodes, rewards)
                stats = ppo.update(
                    net, optimizer, steps, advantages, returns, ppo_settings, generator
                )
                losses = {"loss/policy": stats.policy_loss, "loss/value": stats.value_loss}
                check_finite(net, f"update {update + 1}", losses, where, "simic.ppo.lr")
                row = _row(update, episodes, terms, len(steps), stats)
                row["update_s"] = time.perf_counter() - started
                last_reward = row["episode/return"]
                history.append(row)
                if sink is not None and update not in logged:
                    sink.run.log(row)
                bar.set_postfix(ret=f"{last_reward:+.3f}", ev=f"{stats.explained_variance:.2f}")
                done = update + 1
                where["at"] = f"update {done + 1}"  # the next one, from here on
                if done % settings.checkpoint_every == 0 or done == settings.updates:
                    save(done)
            bar.close()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM's SignalInterrupt
        signum = getattr(exc, "signum", signal.SIGINT)
        if sink is not None:
            sink.run.finish(exit_code=1)  # what was logged stays readable; a resume continues it
        raise Stopped(signum, where["at"], where["saved"], where["dir"]) from None
    except PolicyDiverged:
        if sink is not None:
            sink.run.finish(exit_code=1)
        raise
    except EpisodeFailed as exc:
        if sink is not None:
            sink.run.finish(exit_code=1)
        raise TrainingFailed(exc, where["at"], where["saved"], where["dir"]) from exc
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, on_sigterm)
    elsewhere = settings.resume and resumed_dir(settings.resume).resolve() != run_dir.resolve()
    if start == settings.updates and elsewhere:  # no update ran, so none saved it here
        save(start)  # helper-found: a directory holding run.log alone, refused as a resume
    if settings.output:
        policy.save_weights(
            Path(settings.output),
            {
                "updates": settings.updates,
                "config_hash": config_hash,
                "final": history[-1] if history else {},
            },
        )
    if sink is not None:
        for key, value in (history[-1] if history else {}).items():
            sink.run.summary[key] = value
        sink.run.finish()
    return last_reward
