"""A basic sweep's jobs checked before the first one trains.

Each job checks its own configuration when it starts (`esper.app.build`): in a sweep of
`dataset.batch_size=64,0`, job 0 trained to the end before job 1 was refused (helper-found),
and in a long sweep that is hours. Here, before any job starts, each value of each swept key
is composed and checked as `esper.app.check_run` checks a run (settings, dataset and host
built, blueprints that fit, optimizer and scheduler), in the first job that holds it: the
cost grows with the number of values, not of combinations (20 jobs of `seed=0..9
policy=a,b` check 12 configurations, 0.2 to 0.6 s each on this machine). A combination
that is bad only as a whole (`val_fraction` and `test_fraction` each fine, their sum not) is
still said by its job. Optuna's trials are sampled as the sweep goes, and a policy training's episodes are
checked by Simic itself: neither is checked here.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from esper.config import ConfigError

log = logging.getLogger(__name__)


def jobs_to_check(overrides: list[str]) -> list[list[str]]:
    """The basic sweeper's jobs for `overrides` (the command line's), keeping the first job
    that holds each value of each swept key."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    seen: set[str] = set()
    chosen = []
    for job in jobs:
        if not set(job) <= seen:
            chosen.append(job)
            seen |= set(job)
    return chosen


def check_sweep_jobs(config: DictConfig) -> None:
    """Raise ConfigError naming the first job (by its overrides) whose configuration a run
    would refuse; nothing for a sweep this does not check (see the module's docstring)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    from esper.app import check_run

    sweeper = str(config.hydra.sweeper.get("_target_", ""))
    if not sweeper.endswith("BasicSweeper") or "simic" in config:
        return
    if not GlobalHydra.instance().is_initialized():
        return
    # as the basic sweeper reads them: its `params` (a preset's), then the command line's
    params = config.hydra.sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + [
        str(o) for o in config.hydra.overrides.task
    ]
    jobs = jobs_to_check(overrides)
    if len(jobs) < 2:
        return  # one job checks itself as it starts
    for job in jobs:
        try:
            composed = compose(config_name=str(config.hydra.job.config_name), overrides=job)
            keys = [str(k) for k in composed if k not in ("hydra", "run_dir")]
            container: dict[str, Any] = OmegaConf.to_container(  # type: ignore[assignment]
                OmegaConf.masked_copy(composed, keys), resolve=True
            )
        except Exception as exc:  # noqa: BLE001 - Hydra's or OmegaConf's: the job says it
            log.debug("sweep check: job %s not composed here (%s)", job, exc)
            continue
        if (container.get("trainer") or {}).get("strategy", "single") != "single":
            continue  # a ddp sweep is refused as such (esper.command_line)
        try:
            check_run(container)
        except ConfigError as exc:
            swept = [o for o in job if o in _swept(overrides)] or job
            raise ConfigError(
                f"the sweep's job with {' '.join(swept)}: {exc}; no job was started"
            ) from None
        except Exception as exc:  # noqa: BLE001 - a user's factory's own error: its job says it
            log.debug("sweep check: job %s not checked here (%s)", job, exc)


def _swept(overrides: list[str]) -> set[str]:
    """`key=value` for every value of every swept key of `overrides`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    swept = set()
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            key = override.get_key_element()
            swept |= {f"{key}={value}" for value in override.sweep_string_iterator()}
    return swept
