"""build(cfg) -> Experiment: the only place that instantiates parts from configuration."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from esper import blueprints, preflight
from esper.config import (
    GROUPS,
    NEUTRAL_GROUPS,
    NEUTRAL_TRAINER_KEYS,
    ConfigError,
    RunConfig,
    first_line,
    from_environment,
    unread_paths,
    validate,
)
from esper.data import DataSplits
from esper.events import ConsoleSink, EventBus, JsonlSink, Sink, WandbSink
from esper.kernels import KernelLibrary
from esper.logfiles import leave_log_files
from esper.policy.contract import check_policy
from esper.seeds import MorphogeneticModel, ProbeFailed, SiteError, wrap
from esper.training import checkpoint
from esper.training.distributed import ranks_from_env
from esper.training.experiment import Experiment, Identity
from esper.training.progress import quiet_console
from esper.training.record import RunRecorder
from esper.training.trainer import Trainer

log = logging.getLogger(__name__)


def _instantiate(
    group: str, node: Any, environment: dict[str, str] | None = None, **kwargs: Any
) -> Any:
    """`node` built, or one ConfigError line naming the group; `environment` (from
    `from_environment`) names the variable a value the error quotes came from."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        said = f"{group}: {cause}{_set_by_preset(group, cause)}"
        raise ConfigError(_from_variables(said, group, node, environment)) from exc
    except (TypeError, ValueError) as exc:
        said = f"{group}: {exc}{_set_by_preset(group, exc)}"
        raise ConfigError(_from_variables(said, group, node, environment)) from exc


def _from_variables(said: str, group: str, node: Any, environment: dict[str, str] | None) -> str:
    """`said` on one line, each `key=value` it quotes that an environment variable gave
    followed by that variable's name (helper-found: `ESPER_S3_BUCKET='bad bucket!'` was said
    as `storage.bucket='bad bucket!'`, a key the user never wrote, over three lines)."""
    said = " ".join(said.split())
    for key, variable in (environment or {}).items():
        name = key.removeprefix(f"{group}.")
        if name == key or not isinstance(node, dict) or name not in node:
            continue
        quoted = f"{key}={node[name]!r}"
        said = said.replace(quoted, f"{quoted} (from the environment variable {variable})")
    return said


def _set_by_preset(group: str, exc: BaseException) -> str:
    """An argument the target does not take, set by a preset (for another choice of `group`,
    or its own mistake: helper-found, "for another model" misled there): name the preset and
    how to drop the key."""
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
    found = unexpected and preflight.preset_that_set(group, unexpected[1])
    if not (unexpected and found):
        return ""
    key = f"{group}.{unexpected[1]}"
    chose = f"; it also chose {', '.join(found.also)}" if found.also else ""
    return (
        f" ({key} is set by {found.name}, and {group}={found.choice} does not take it; drop it "
        f"with ~{key}{chose})"
    )


def _hydra_node() -> Any:
    """Hydra's own configuration, unresolved, when running under Hydra (a job's config lacks
    it): `hydra.run.dir` may refer to a paths key of one's own."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return OmegaConf.to_container(HydraConfig.get(), resolve=False)


def hydra_context() -> tuple[dict[str, str], dict[str, Any]]:
    """Group choices and W&B grouping from Hydra's runtime, when running under Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}, {}
    hydra_cfg = HydraConfig.get()
    choices = {g: str(hydra_cfg.runtime.choices.get(g)) for g in GROUPS}
    wandb_names: dict[str, Any] = {}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        wandb_names["group"] = Path(hydra_cfg.sweep.dir).name
        wandb_names["name"] = f"{Path(hydra_cfg.sweep.dir).name}-{hydra_cfg.job.num}"
    return choices, wandb_names


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_blueprints_fit(settings: RunConfig, model: Any) -> None:
    fits = {
        s.name: blueprints.compatible(s.shape, settings.blueprints.allowed)
        for s in model.iter_slots()
    }
    if not any(fits.values()):
        kinds = sorted({s.kind for s in model.iter_slots()})
        usable = [n for n in blueprints.names() if set(blueprints.get(n).kinds) & set(kinds)]
        raise ConfigError(
            f"blueprints.allowed={settings.blueprints.allowed}: none fits the {'/'.join(kinds)} "
            f"activations at model.sites={list(fits)}; blueprints that do: {', '.join(usable)}"
        )


def _check_kernels(
    settings: RunConfig, model: Any, library: KernelLibrary, may_germinate: bool
) -> None:
    """Blueprints that cannot serve a slot fail now, not as a seed culled mid-run."""
    if not settings.kernels.preflight:
        preflight.check_custom_contracts(settings.blueprints, model)
        return
    started = time.perf_counter()
    compiled = preflight.check_blueprints(
        settings.blueprints, model, library if may_germinate else None, settings.trainer.device
    )
    log.info(
        "preflight: every offered blueprint checked in %.2fs (%d kernels compiled)",
        time.perf_counter() - started,
        compiled,
    )


def config_hash(container: dict[str, Any]) -> str:
    """Names the experiment, not the job: seed, paths, storage and logging are left out."""
    ignored = ("seed", "run_dir", "tags", "optimized_metric", *NEUTRAL_GROUPS)
    relevant = {k: v for k, v in container.items() if k not in ignored}
    relevant["trainer"] = {
        k: v for k, v in (relevant.get("trainer") or {}).items() if k not in NEUTRAL_TRAINER_KEYS
    }
    for group in ("dataset", "policy"):
        node = dict(relevant.get(group) or {})
        node.pop("loader_seed", None)
        node.pop("seed", None)
        relevant[group] = node
    seeds = dict(relevant.get("seeds") or {})
    # these keys came after experiments/ recorded its hashes; at their defaults they still hold
    for key, default in (("contribution", "bypass"), ("probation_epochs", 0)):
        if seeds.get(key) == default:
            seeds.pop(key)
    if "seeds" in relevant:
        relevant["seeds"] = seeds
    canonical = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _make_sinks(
    settings: RunConfig,
    container: dict[str, Any],
    run_dir: Path,
    wandb_names: dict[str, Any],
    resume_state: dict[str, Any] | None,
    choices: dict[str, str],
) -> tuple[list[Sink], dict[str, Any]]:
    """events.jsonl, adaptations as log lines, and the configured logger (W&B)."""
    sinks: list[Sink] = [JsonlSink(run_dir / "events.jsonl"), ConsoleSink()]
    wandb_info: dict[str, Any] = {"mode": "disabled", "run_dir": None}
    if settings.logger.target:
        logger_node = dict(container["logger"])
        for key, value in wandb_names.items():
            if logger_node.get(key) is None:
                logger_node[key] = value
        if logger_node.get("tags") is None:
            logger_node["tags"] = settings.tags + [
                f"{group}:{choices[group]}"
                for group in ("dataset", "model", "policy")
                if choices.get(group) not in (None, "None")
            ]
        if settings.trainer.quiet:
            logger_node["silent"] = True  # W&B's own console lines too
            os.environ.setdefault("WANDB_SILENT", "true")  # and those before its settings
        if logger_node.get("job_type") is None:
            logger_node["job_type"] = choices.get("policy", "train")
        if resume_state is not None and resume_state.get("wandb_run_id"):
            logger_node["run_id"] = resume_state["wandb_run_id"]
        make_sink = _instantiate("logger", logger_node, _partial_=True)
        try:
            sink = make_sink(run_dir=str(run_dir), config=container)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"logger: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - W&B failing to start never stops training
            error = first_line(exc)
            log.error("logger: W&B failed to start (%s); training goes on without it", error)
            return sinks, {"mode": "failed", "run_dir": None, "error": error}
        sinks.append(sink)
        if isinstance(sink, WandbSink):
            wandb_info = {"mode": sink.mode, "run_dir": sink.run_dir, "run_id": sink.run_id}
            if sink.fallback:
                wandb_info["fallback"] = sink.fallback
    return sinks, wandb_info


def build_model(
    settings: RunConfig, container: dict[str, Any], environment: dict[str, str] | None = None
) -> tuple[DataSplits, MorphogeneticModel]:
    """The dataset and the host wrapped with its dormant slots, each checked before any
    training (a user's own factory or host included); `environment` names the variables a
    bad setting came from."""
    data = _instantiate("dataset", container["dataset"], environment)
    if not isinstance(data, DataSplits):
        raise ConfigError(
            f"dataset: {container['dataset'].get('_target_')} returned a "
            f"{type(data).__name__}, not DataSplits (see esper.targets.DatasetFactory)"
        )
    preflight.check_data(data)
    model_node = {k: v for k, v in container["model"].items() if k != "sites"}
    host = _instantiate(
        "model",
        model_node,
        environment,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
    )
    if not isinstance(host, torch.nn.Module):  # helper-found: `no attribute 'parameters'`
        raise ConfigError(
            f"model: {model_node.get('_target_')} returned a {type(host).__name__}, not an "
            "nn.Module (see esper.targets.HostFactory)"
        )
    preflight.check_host_input(host, data)
    try:
        model = wrap(
            host,
            settings.model.sites,
            example_input=data.train.x[:2],
            embargo_epochs=settings.seeds.embargo_epochs,
            latency_sample_every=settings.seeds.latency_sample_every,
            fossilized_trainable=settings.seeds.fossilized == "train",
        )
    except SiteError as exc:
        raise ConfigError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - the probe forward: the host refused the input
        cause = exc.__cause__ if isinstance(exc, ProbeFailed) and exc.__cause__ else exc
        raise preflight.host_cannot_take(host, data, cause) from exc
    preflight.check_host_output(model, data)
    return data, model


@contextlib.contextmanager
def own_random_state() -> Iterator[None]:
    """The caller's Python, NumPy and torch random states, as they were afterwards."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


def _optimizer_and_scheduler(container: dict[str, Any]) -> tuple[Any, Any]:
    """The configured optimizer and scheduler factories (partials), checked."""
    # plain lists and dicts for their arguments, as torch expects them (helper-found: a list
    # `min_lr` reached ReduceLROnPlateau as a ListConfig, and failed its first comparison)
    optimizer = _instantiate(
        "trainer.optimizer", container["trainer"]["optimizer"], _convert_="all"
    )
    scheduler_node = container["trainer"].get("scheduler")
    scheduler = (
        _instantiate("trainer.scheduler", scheduler_node, _convert_="all")
        if scheduler_node
        else None
    )
    preflight.check_optimizer(optimizer, scheduler, container["trainer"]["max_epochs"])
    return optimizer, scheduler


def check_run(container: dict[str, Any]) -> None:
    """What `build` checks before it trains, for a run built later elsewhere (a Simic
    episode, in a worker, updates on): the settings, the strategy, the dataset and host
    (built), the blueprints that fit its slots, the optimizer and scheduler. Kernels are not
    compiled here."""
    settings = validate(container)
    if settings.trainer.strategy != "single":
        raise ConfigError(
            f"trainer.strategy={settings.trainer.strategy}: allowed here: single (this run is "
            "built in a process of its own, not under torchrun)"
        )
    with own_random_state():  # the caller's draws stay its own
        seed_everything(settings.seed)
        _, model = build_model(settings, container)
    _check_blueprints_fit(settings, model)
    _optimizer_and_scheduler(container)


def _warn_if_it_cannot_germinate(policy: object, max_epochs: int) -> None:
    """A heuristic whose first plateau comes after the run's last epoch grows nothing: said
    (run.log, console) rather than left to be found in a sweep of identical results
    (helper-found: `hparams_search=heuristic_patience debug=fast`, 18 jobs, 0 adaptations)."""
    first = getattr(policy, "first_germination_epoch", None)
    if isinstance(first, int) and first >= max_epochs:
        log.warning(
            "the policy cannot germinate before epoch %d (policy.warmup_epochs=%s, "
            "policy.patience=%s) and the run ends after trainer.max_epochs=%d: no seed will "
            "germinate",
            first,
            getattr(policy, "warmup_epochs", "?"),
            getattr(policy, "patience", "?"),
            max_epochs,
        )


def make_library(
    settings: RunConfig, container: dict[str, Any], environment: dict[str, str] | None = None
) -> KernelLibrary:
    """The kernel library over the configured store (`storage`, `kernels`); `environment`
    names the variables a bad store setting came from."""
    kernels = settings.kernels
    return KernelLibrary(
        _instantiate("storage", container["storage"], environment),
        cache_bytes=kernels.cache_bytes,
        latency_batches=kernels.latency_batches,
        reference_batch=kernels.reference_batch,
        async_compile=kernels.async_compile,
        workers=kernels.workers,
    )


def build(cfg: DictConfig, run_dir: str | Path | None = None) -> Experiment:
    started = time.perf_counter()
    job = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])  # not Hydra's node
    container: dict[str, Any] = OmegaConf.to_container(job, resolve=True)  # type: ignore[assignment]
    unresolved = OmegaConf.to_container(job, resolve=False)
    environment = from_environment(unresolved)
    settings = validate(container, environment)
    ranks = ranks_from_env(settings.trainer.strategy, settings.trainer.device)
    if settings.trainer.quiet or not ranks.writer:
        quiet_console()  # a quiet sweep; or a ddp rank other than 0: rank 0 speaks for the run
    if not ranks.writer:
        leave_log_files()  # rank 0's run.log is the run's
    unread = unread_paths(settings, [unresolved, _hydra_node()])
    if unread is not None and ranks.writer:
        log.warning(unread)
    # ddp: every rank works in rank 0's run directory; only rank 0 writes there
    run_dir = Path(ranks.broadcast(str(run_dir or container.get("run_dir") or ".")))
    replace_earlier_run = ranks.writer and preflight.check_run_dir(
        run_dir, settings.trainer.resume, settings.trainer.overwrite
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    choices, wandb_names = hydra_context()
    seed_everything(settings.seed)
    resume_path, resume_state = None, None
    if settings.trainer.resume:
        resume_path, resume_state = checkpoint.load(settings.trainer.resume)
        checkpoint.check_same_config(settings.trainer.resume, resume_state["config"], container)
        checkpoint.check_epochs_left(
            settings.trainer.resume,
            resume_state.get("epoch"),
            settings.trainer.max_epochs,
            settings.trainer.stop_after_epoch,
        )

    data, model = build_model(settings, container, environment)
    data_digest = data.digest() if settings.trainer.checkpoint or resume_state else None
    if resume_state is not None and data_digest is not None:
        checkpoint.check_same_data(
            "trainer.resume",
            str(settings.trainer.resume),
            resume_state.get("data"),
            data_digest,
            "resume on the data the run trained on",
        )
    _check_blueprints_fit(settings, model)
    library = make_library(settings, container, environment)
    policy = _instantiate("policy", container["policy"])
    check_policy(policy, str(container["policy"].get("_target_", "the policy")))
    if ranks.writer:  # rank 0 speaks for the run
        _warn_if_it_cannot_germinate(policy, settings.trainer.max_epochs)
    if container["policy"].get("checkpoint", "") is None and hasattr(policy, "load_weights"):
        # said by the run, not the policy: Simic trains one from these weights, knowingly
        log.warning(
            "policy=gnn with policy.checkpoint=null: initial weights (seed %s)", policy.seed
        )
    optimizer, scheduler = _optimizer_and_scheduler(container)
    # ddp: rank 0 checks and compiles the offered kernels; the other ranks load what it
    # attaches, and stop with it where it cannot
    may_compile = getattr(policy, "may_germinate", True)
    ranks.from_rank_zero(lambda: _check_kernels(settings, model, library, may_compile))
    if replace_earlier_run:
        preflight.clear_run(run_dir)

    if ranks.writer:
        sinks, wandb_info = _make_sinks(
            settings, container, run_dir, wandb_names, resume_state, choices
        )
    else:  # ddp: rank 0 writes events.jsonl, summary.json, checkpoints and W&B
        sinks, wandb_info = [ConsoleSink()], {"mode": "disabled", "run_dir": None}
    recorder = RunRecorder()
    bus = EventBus([recorder, *sinks])
    trainer = Trainer(
        model=model,
        data=data,
        policy=policy,
        library=library,
        bus=bus,
        recorder=recorder,
        optimizer=optimizer,
        scheduler=scheduler,
        trainer=settings.trainer,
        seeds=settings.seeds,
        blueprints=settings.blueprints,
        kernels=settings.kernels,
        checkpoint_to=run_dir / "checkpoints" / "last.pt" if settings.trainer.checkpoint else None,
        checkpoint_extra={
            "config": container,
            "wandb_run_id": wandb_info.get("run_id"),
            "data": data_digest,
        },
        ranks=ranks,
    )
    if resume_state is not None:
        with checkpoint.read_as_checkpoint("trainer.resume", str(settings.trainer.resume)):
            trainer.load_state_dict(resume_state)
    identity = Identity(
        choices={g: choices.get(g, "custom") for g in GROUPS},
        allowed_blueprints=settings.blueprints.allowed,
        sites=[str(s) for s in settings.model.sites],
        config_hash=config_hash(container),
        seed=settings.seed,
        resumed_from=str(resume_path.absolute()) if resume_path else None,  # a report reads it
    )
    return Experiment(
        trainer=trainer,
        bus=bus,
        run_dir=run_dir,
        config=container,
        identity=identity,
        wandb=wandb_info,
        started=started,
    )
