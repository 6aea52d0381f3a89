"""One episode: a complete short training run of one task, its decisions recorded.

Episodes run in worker processes (spawned; each composes the run's config as run.py would), so
an update's episodes train side by side. The host alone on the same task and seed is the
baseline an episode's reward is measured against (esper.simic.reward).
"""

from __future__ import annotations

import logging
import pickle
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esper.policy.gnn import GnnPolicy, Step
from esper.policy.masks import OPERATIONS

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from esper.simic.settings import SimicConfig

log = logging.getLogger(__name__)

CONF = Path(__file__).resolve().parents[2] / "conf"
QUIET = (
    "logger=none",
    "trainer.checkpoint=false",
    "trainer.progress=false",
    "kernels.async_compile=false",
)


@dataclass(frozen=True)
class EpisodeSpec:
    """Which run an episode is: the task's overrides (with its host width), the seed, and the
    seed the policy samples its decisions with."""

    task: str
    overrides: tuple[str, ...]
    seed: int
    epochs: int
    policy_seed: int = 0


@dataclass
class EpisodeResult:
    spec: EpisodeSpec
    val_accuracy: float
    added_params: int
    added_flops: int
    wall_s: float
    steps: list[Step] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)


EPISODE_KEYS = {
    "seed": "simic.train_seeds (the seeds episodes draw)",
    "trainer.max_epochs": "simic.episode_epochs (every episode's length)",
    "trainer.stop_after_epoch": "simic.episode_epochs (every episode's length)",
    "run_dir": "none (each episode runs in a directory of its own)",
}
"""Run keys `episode_overrides` sets after the task's: one in a task or `simic.overrides` was
silently replaced (`trainer.max_epochs=50` trained episodes of `simic.episode_epochs`)."""


def episode_overrides(spec: EpisodeSpec, policy: Sequence[str], workdir: str) -> list[str]:
    """The run overrides an episode composes conf/config.yaml with: quiet, the task's (host
    variant and `simic.overrides` included), the policy's, the seed and the length."""
    return [
        *QUIET,
        *spec.overrides,
        *policy,
        f"seed={spec.seed}",
        f"trainer.max_epochs={spec.epochs}",
        "trainer.stop_after_epoch=null",
        f"run_dir={workdir}/run",
    ]


@contextmanager
def composed(overrides: Sequence[str], hydra: bool = False) -> Iterator[DictConfig]:
    """conf/config.yaml with `overrides`, as an episode's worker composes it. Under run.py,
    Hydra holds train_policy's tree: it is set aside for this and put back on leaving. With
    `hydra`, the config keeps its `hydra` node and is Hydra's runtime config meanwhile, as
    under run.py: what a run's errors read to name the preset that set a key
    (`esper.preflight.preset_that_set`) is there."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobRuntime

    running = GlobalHydra.instance()
    outer, outer_cfg = running.hydra, HydraConfig.instance().cfg
    job_name = JobRuntime.instance().get("name")  # initialize_config_dir sets it to "app"
    running.clear()
    try:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=hydra)
            if hydra:
                HydraConfig.instance().set_config(cfg)
            yield cfg
    finally:
        HydraConfig.instance().cfg = outer_cfg
        JobRuntime.instance().set("name", job_name)  # helper-found: a sweep's later jobs
        if outer is not None:  # logged to app.log, named `app`
            running.clear()
            running.initialize(outer)


def compose_run(overrides: Sequence[str]) -> DictConfig:
    """The run config an episode trains (`composed`, without Hydra's node)."""
    with composed(overrides) as cfg:
        return cfg


def one_line(exc: BaseException) -> str:
    """A Hydra, OmegaConf or target error as one line: the target's own message rather than
    Hydra's wrapper around it."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ValueError | TypeError) else exc
    return " ".join(str(cause).split()).removeprefix("invalid configuration: ")


def first_blended_epoch(germinated: int, wait_epochs: int | None, training_epochs: int) -> int:
    """The first epoch that trains a seed blended in (alpha above 0) on the schedule, for a
    seed germinated at the control step ending epoch `germinated`: its kernel attaches
    `kernels.wait_epochs` control steps later, at the next one at the earliest (0 and None
    attach there too), it incubates `policy.training_epochs` epochs, and the control step
    that ends the last of them starts its blend for the epoch after. helper-found: a warning
    that compared the incubation alone with the episode let episodes of 4 and 5 epochs, where
    no seed can blend (germinated at epoch 0: TRAINING at 1, BLENDING from the end of epoch
    4), train on without a word."""
    return germinated + max(1, wait_epochs or 0) + training_epochs + 1


def check_suite(settings: SimicConfig) -> None:
    """Compose and validate every (task, host variant) as its episodes will, with the
    baseline's policy and the GNN's, and build its dataset and host as a run's preflight
    does (`esper.app.check_run`), before any episode: a bad task, variant or
    `simic.overrides` is one line naming it, not a worker's traceback minutes in
    (helper-found: image blueprints on a vector host, a dataset without its files, a host
    variant it cannot build each failed when the task was first drawn, updates in)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from esper.app import check_run
    from esper.config import ConfigError, validate

    seed, epochs = settings.train_seeds[0], settings.episode_epochs
    named = [(f"simic.overrides={settings.overrides}", settings.overrides)] + [
        (f"simic.tasks[{task.name}]", [*task.overrides, *variant])
        for task in settings.tasks
        for variant in task.variants
    ]
    for where, items in named:
        for item in items:
            key = item.lstrip("+~").split("=", 1)[0]
            if key in EPISODE_KEYS:
                raise ConfigError(
                    f"{where}: {item!r} is set by Simic for every episode, after these "
                    f"overrides; allowed: {EPISODE_KEYS[key]}"
                )
    for where, items in named:  # helper-found: a task's `policy=random` was dropped quietly
        for item in items:
            if item.lstrip("+~").startswith("policy"):
                raise ConfigError(
                    f"{where}: {item!r} sets the policy, but Simic sets it for every episode "
                    "(the GNN it trains, and policy=none for the host-alone baseline); "
                    "allowed: run keys other than policy"
                )

    short: list[str] = []

    def check(spec: EpisodeSpec, policy: tuple[str]) -> None:
        with composed(episode_overrides(spec, policy, "."), hydra=True) as cfg:
            # under Hydra's runtime config, as a run: a preset's key is named (helper-found)
            run = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
            container: dict[str, Any] = OmegaConf.to_container(run, resolve=True)  # type: ignore[assignment]
            validate(container)
            if policy == ("policy=none",):  # takes no key: a policy.* override fails
                instantiate(run.policy)
                check_run(container)
            elif settings.lifecycle == "schedule":
                wait, incubation = run.kernels.wait_epochs, run.policy.training_epochs
                if first_blended_epoch(0, wait, incubation) >= epochs:
                    short.append(
                        f"{spec.task} (kernels.wait_epochs={wait}, "
                        f"policy.training_epochs={incubation})"
                    )

    for task in settings.tasks:
        for variant in task.variants:
            own = EpisodeSpec(task.name, (*task.overrides, *variant), seed, epochs)
            spec = EpisodeSpec(task.name, (*own.overrides, *settings.overrides), seed, epochs)
            for policy in (("policy=none",), ("policy=gnn",)):
                try:
                    check(spec, policy)
                except Exception as exc:  # noqa: BLE001 - any composition error, one line
                    try:  # the task's own overrides alone, to name the culprit
                        check(own, policy)
                        key = f"simic.overrides={settings.overrides}"
                    except Exception:  # noqa: BLE001
                        key = f"simic.tasks[{task.name}] {[*task.overrides, *variant]}"
                    raise ConfigError(f"{key} ({policy[0]}): {one_line(exc)}") from None
    if short:  # the imitation path warned of this; PPO's episodes did not
        log.warning(
            "simic.episode_epochs=%d: under simic.lifecycle=schedule a seed germinated at the "
            "first control step still waits for its kernel and incubates until the episode "
            "ends (%s), so no seed ever blends: every germination only costs parameters, and "
            "the policy can only learn to wait",
            epochs,
            ", ".join(dict.fromkeys(short)),
        )


def run_in_worker(
    spec: EpisodeSpec,
    weights: str | None,
    kernel_store: str,
    threads: int = 1,
    teacher: tuple[str, ...] = (),
) -> bytes:
    """`run_episode` for a process pool: the result comes back as plain pickled bytes, since
    torch would otherwise pass each recorded tensor through shared memory (one file
    descriptor each), which exhausts descriptors and stalls the pool. `threads`: torch's
    intra-op threads in this worker (workers x threads should not exceed the cores: these
    models are small, and oversubscribed threads spin against each other)."""
    import torch

    torch.set_num_threads(threads)
    return pickle.dumps(run_episode(spec, weights, kernel_store, teacher))


def receive(payload: bytes) -> EpisodeResult:
    """The parent's side of `run_in_worker` (bytes from our own worker, not from a file)."""
    result = pickle.loads(payload)  # noqa: S301 - our own worker's output
    assert isinstance(result, EpisodeResult)
    return result


def run_episode(
    spec: EpisodeSpec, weights: str | None, kernel_store: str, teacher: tuple[str, ...] = ()
) -> EpisodeResult:
    """Train the task once: with the GNN policy at `weights` (recording its decisions), or
    with no policy at all (`weights=None`: the baseline). With `teacher` (the policy's run
    overrides) the teacher decides and the GNN policy at `weights` records each step with the
    teacher's decision (esper.simic.imitation)."""
    import os

    from esper.app import build
    from esper.simic.imitation import Imitation

    started = time.perf_counter()
    os.environ["ESPER_KERNEL_STORE"] = kernel_store
    if teacher:
        policy: tuple[str, ...] = teacher
    elif weights:
        policy = ("policy=gnn", f"policy.checkpoint={weights}", f"policy.seed={spec.policy_seed}")
    else:
        policy = ("policy=none",)
    with tempfile.TemporaryDirectory() as workdir:
        experiment = build(compose_run(episode_overrides(spec, policy, workdir)))
        trace: list[Step] = []
        if teacher:
            if weights is None:
                raise ValueError("an imitation episode needs the student's weights")
            taught = experiment.trainer.policy  # the heuristic: check_teacher made its caps
            student = GnnPolicy(  # the student's, and they shape the student's masks
                checkpoint=weights,
                scatter_backend="torch",
                max_in_flight=taught.max_in_flight,  # type: ignore[attr-defined]
                max_seeds=taught.max_seeds,  # type: ignore[attr-defined]
            )
            student.trace = trace
            imitation = Imitation(taught, student)
            experiment.trainer.policy = experiment.trainer.control.policy = imitation
        elif weights:
            experiment.trainer.policy.trace = trace  # type: ignore[attr-defined]
        record = experiment.run()
    actions = dict.fromkeys(OPERATIONS, 0)
    for step in trace:
        actions[OPERATIONS[step.operation]] += 1
    flops = record.flops_per_sample
    return EpisodeResult(
        spec=spec,
        val_accuracy=record.metrics["val_accuracy"],
        added_params=record.params["seeds"],
        added_flops=flops.get("total", 0) - flops.get("host", 0),
        wall_s=time.perf_counter() - started,
        steps=trace,
        actions=actions,
    )
