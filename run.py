"""Esper's one entrypoint: `python run.py [group=option ...] [key=value ...]`, `-m` to sweep."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn


def _interrupted_while_starting(signum: int, frame: FrameType | None) -> NoReturn:
    """Ctrl-C or SIGTERM while Python imports torch and Esper (seconds, before any file is
    written): one line and 128 + the signal. Ctrl-C printed an import's KeyboardInterrupt
    traceback there, and SIGTERM's default action ended the process without a word."""
    name = signal.Signals(signum).name
    # one write, as say() makes it: under torchrun every rank may say this at once
    sys.stderr.write(f"esper: interrupted by {name} while starting; nothing was written\n")
    sys.stderr.flush()
    os._exit(128 + signum)


STARTING: list[int] = []
"""The signals `_interrupted_while_starting` holds until run.py's own handlers are in: those
with their default action (not where a launcher made them ignored)."""
if __name__ == "__main__":  # before the first import that takes time (hydra's: 0.2 s)
    for _signum, _default in (
        (signal.SIGINT, signal.default_int_handler),
        (signal.SIGTERM, signal.SIG_DFL),
    ):
        if signal.getsignal(_signum) is _default:
            STARTING.append(_signum)
            signal.signal(_signum, _interrupted_while_starting)

import hydra  # noqa: E402 - after the start-up handlers
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

if TYPE_CHECKING:
    from esper.contracts import RunRecord

log = logging.getLogger("esper.run")


def result_text(record: RunRecord) -> str:
    """The run's result as the console shows it: splits, size, adaptations, kernels."""
    m, p, f = record.metrics, record.params, record.flops_per_sample
    lines = ["", " split  |   loss  | accuracy", " -------+---------+---------"]
    for split in ("train", "val", "test"):
        if f"{split}_loss" in m:  # an interrupted run never reads test
            lines.append(f" {split:<6} | {m[f'{split}_loss']:7.4f} | {m[f'{split}_accuracy']:8.4f}")
    lines.append(
        f" params: host {p['host']:,}, seeds {p['seeds']:,}, total {p['total']:,}; forward FLOPs "
        f"a sample: host {f.get('host', 0):,}, total {f.get('total', 0):,}"
    )
    for a in record.adaptations:
        lines.append(
            f"  epoch {a.epoch:>3}  {a.slot:<12} {a.from_state.value:>10} -> "
            f"{a.to_state.value:<10} {a.blueprint or '-':<14} {a.reason}"
        )
    for k in record.kernels:
        lines.append(
            f"  kernel {k.kernel_id[:12]} {k.blueprint:<14} {k.slot:<12} from={k.source:<8} "
            f"p50={k.latency_us_p50:.0f}us p95={k.latency_us_p95:.0f}us "
            f"compile={k.compile_s:.2f}s"
        )
    lines.append(f" wall {record.wall_s:.1f}s; W&B {record.wandb['mode']}")
    return "\n".join(lines)


def train_policy(cfg: DictConfig) -> float:
    """Simic: train the GNN policy (conf/train_policy.yaml); returns the last mean reward."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from pydantic import ValidationError

    from esper.atomic import WriteError
    from esper.config import ConfigError, explain, reason
    from esper.simic.settings import SimicConfig
    from esper.simic.train import PolicyDiverged, Stopped, TrainingFailed, train

    try:
        container = OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"]), resolve=True
        )
    except OmegaConfBaseException as exc:  # e.g. an unescaped ${...} in a list of overrides
        key = getattr(exc, "full_key", None) or "config"
        refuse(ConfigError(f"{key}: {reason(exc)} (write \\${{...}} for a literal one)"), 2)
    assert isinstance(container, dict)
    try:
        settings = SimicConfig.model_validate(container["simic"])
    except ValidationError as exc:
        refuse(explain(exc, ("simic",)), 2)
    logger = None
    if cfg.logger.get("_target_"):
        logger = instantiate(cfg.logger, _partial_=True)
    try:
        return train(settings, Path(cfg.run_dir), container, logger)  # type: ignore[arg-type]
    except ConfigError as exc:  # a suite, teacher or resume that cannot run: before any episode
        refuse(exc, 2)
    except PolicyDiverged as exc:  # a policy of NaN weights is not saved: one line, exit 1
        refuse(exc, 1)
    except TrainingFailed as exc:  # an episode diverged, or its worker died: which, and how on
        refuse(exc, 1)
    except WriteError as exc:  # simic.pt or a policy: a full disk, a read-only directory
        refuse(RunFailed(f"the policy training failed: {exc.strerror}"), 1)
    except Stopped as exc:  # SIGINT or SIGTERM: where it stopped and how to resume, in one line
        say(f"esper: {exc}")
        raise SystemExit(128 + exc.signum) from None


class RunFailed(Exception):
    """A run that could not go on for a reason outside it (its files could not be written)."""


def say(line: str) -> None:
    """The run's one line: on stderr, and in run.log, which otherwise ends without it."""
    from esper.logfiles import to_log_files

    sys.stderr.write(f"{line}\n")  # one write: under ddp every rank says its line at once
    sys.stderr.flush()
    to_log_files(line)


def refuse(exc: Exception, code: int) -> NoReturn:
    """One line on stderr; in a sweep the launcher records this job as failed and goes on
    with the others, alone the process exits with `code` (under ddp, once every rank has said
    it: esper.training.distributed.shut_down)."""
    say(f"esper: {exc}")
    if "torch.distributed" in sys.modules:
        from esper.training.distributed import shut_down

        shut_down(failed=True)
    if _multirun():  # the launcher records the job failed; Hydra says it without a traceback
        from esper.command_line import JobRefused

        raise JobRefused(f"esper: {exc}") from None
    raise SystemExit(code) from None


def recorded() -> None:
    """The run is recorded (summary.json, events.jsonl, W&B): from here a Ctrl-C or SIGTERM
    is ignored, so the exit code says what the record says. helper-found: one in the second or
    so W&B's shutdown takes after the result table exited 130 or 143, `esper: interrupted`, for a
    run whose every file says completed. (A sweep's process still stops on them: its other
    jobs are not recorded yet.) Only as the process's entrypoint: a caller that imports
    `main` keeps its own handlers (a test process ignored every later signal, and so did
    the processes it started)."""
    if not AS_SCRIPT:
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


AS_SCRIPT = False
"""Whether this process runs run.py as its entrypoint (set under `__main__`)."""


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Runs one experiment; returns its `optimized_metric` (a train or val metric, never test)
    to the sweeper (Optuna, Ax, ...).

    Exit codes: 0 done; 2 a configuration error (one line, before training); 1 the run failed
    or diverged (its summary.json says why); 128 + the signal when SIGINT/SIGTERM interrupted it.
    A job of a joblib sweep stopped by Ctrl-C returns NaN instead (the sweep exits 128 + the
    signal once every job has ended: esper.training.sweep_stop).
    """
    from esper.logfiles import guard_log_files

    guard_log_files()  # run.log on a full disk: one line, not a traceback a record
    if "simic" in cfg:  # --config-name train_policy
        return train_policy(cfg)

    from esper.app import build
    from esper.atomic import WriteError
    from esper.config import ConfigError
    from esper.policy.contract import PolicyError
    from esper.training.distributed import RankZeroFailed, shut_down
    from esper.training.guard import Diverged
    from esper.training.interruption import Interruption
    from esper.training.sweep_stop import job_poll, job_stop_file, stop_requested

    stop_file = job_stop_file(cfg)
    if stop_file is not None and stop_requested(stop_file) is not None:
        log.info("skipped: the sweep was interrupted before this job started")
        return float("nan")
    try:
        experiment = build(cfg)
    except ConfigError as exc:
        refuse(exc, 2)
    except WriteError as exc:  # events.jsonl cannot be opened: the file and the cause
        refuse(RunFailed(f"the run could not start: {exc.strerror}"), 1)
    if stop_file is not None:
        experiment.trainer.interruption = Interruption(poll=job_poll(stop_file))

    def said(outcome: str) -> str:  # and summary.json, where it could not be written
        unwritten = experiment.summary_unwritten
        return f"{outcome}; and {unwritten}" if unwritten else outcome

    try:
        record = experiment.run()
    except Diverged as exc:
        refuse(RunFailed(said(str(exc))), 1)
    except WriteError as exc:  # a full disk, a read-only run directory: the file and the cause
        refuse(RunFailed(said(f"the run failed: {exc.strerror}")), 1)
    except RankZeroFailed as exc:  # ddp, rank 1..: rank 0's bug; its traceback is rank 0's
        refuse(RunFailed(f"the run failed: {exc}"), 1)
    except PolicyError as exc:  # a user's policy broke its contract: which, and what is allowed
        refuse(RunFailed(said(f"the run failed: {exc}")), 1)
    except Exception:
        if experiment.trainer.ranks.failure_told:  # ddp, rank 0: wait for the others' lines
            shut_down(failed=True)
        raise  # a bug: its traceback
    if experiment.interrupted_by is None and not _multirun():
        recorded()
    shut_down()  # ddp: leave the process group
    log.info("%s\n outputs: %s", result_text(record), experiment.run_dir)
    if experiment.interrupted_by is not None:
        where = f"{experiment.run_dir}: " if _multirun() else ""
        say(f"esper: {where}{said(str(record.error))}")
        if experiment.interrupted_by == signal.SIGHUP:  # the sweep's process is gone
            sys.stderr.flush()
            os._exit(128 + signal.SIGHUP)
        if stop_file is not None:
            return float("nan")
        raise SystemExit(128 + experiment.interrupted_by)
    if experiment.summary_unwritten:
        refuse(RunFailed(f"the run {record.status}, but {experiment.summary_unwritten}"), 1)
    return float(record.objective(cfg.optimized_metric, cfg.param_cost))


if __name__ == "__main__":
    AS_SCRIPT = True
    try:
        from esper.training.interruption import sigterm_unwinds

        if signal.SIGINT in STARTING:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        sigterm_unwinds(replacing=_interrupted_while_starting)
        from esper.command_line import (
            broken_local_config,
            conflicting_choices,
            flags_first,
            nested_sweep,
            sweep_under_torchrun,
            unknown_key,
            unknown_option_key,
            unsupported_flag,
        )

        sys.argv[1:] = flags_first(sys.argv[1:])  # `run.py seed=0,1 -m debug=fast` as meant
        # Hydra's own message names neither the mistake nor a way out
        groups = [p.name for p in (Path(__file__).parent / "conf").iterdir() if p.is_dir()]
        mistake = (
            unsupported_flag(sys.argv[1:])
            or sweep_under_torchrun(sys.argv[1:], os.environ)
            or nested_sweep(sys.argv[1:])
            or unknown_key(sys.argv[1:], groups)
            or unknown_option_key(sys.argv[1:], Path(__file__).parent / "conf")
            or conflicting_choices(sys.argv[1:], groups)
            or broken_local_config(Path(__file__).parent / "conf")
        )
        if mistake is not None:
            sys.stderr.write(f"esper: {mistake}\n")
            sys.exit(2)
        sys.exit(main())
    except KeyboardInterrupt as exc:  # a second Ctrl-C or SIGTERM, or one before training started
        say("esper: interrupted")
        sys.exit(128 + getattr(exc, "signum", signal.SIGINT))  # a SignalInterrupt's may be SIGTERM
