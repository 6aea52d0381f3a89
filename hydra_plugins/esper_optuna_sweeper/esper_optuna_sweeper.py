"""hydra-optuna-sweeper's sweeper, stopped by Ctrl-C or SIGTERM as Esper stops a joblib sweep
(esper.training.sweep_stop): the running trials end `interrupted` with their summaries and
resume lines and are recorded failed, no trial is launched after the stop, the best trial
completed before it is written to optimization_results.yaml, and the sweep exits 128 + the
signal.

A Hydra plugin must live in the `hydra_plugins` namespace, hence this module; it is
`hydra/sweeper=esper_optuna` (conf/hydra/sweeper/esper_optuna.yaml: Optuna's options, this
`_target_`), which `hparams_search=optuna_growth` selects. Without the `optuna` extra
installed there is no plugin here (and no warning from Hydra's plugin scan)."""

from __future__ import annotations

import logging
import re
from importlib.util import find_spec
from typing import Any

log = logging.getLogger(__name__)

if find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:  # pip install -e '.[optuna]'
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    class EsperOptunaSweeper(OptunaSweeper):
        """OptunaSweeper (same arguments) whose launcher, once the sweep stopped, returns the
        trials it ended failed and launches no more (esper's `StopAwareLauncher`)."""

        def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
            # here, not at the top: Hydra's plugin scan imports this module in every process
            from esper.training.sweep_stop import StopAwareLauncher

            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
            assert self.sweeper.launcher is not None  # set by the setup above
            self.stop_aware = StopAwareLauncher(self.sweeper.launcher, self._fail_fast)
            self.sweeper.launcher = self.stop_aware

        def _fail_fast(self) -> None:
            """Once the sweep stopped: the trials it ended fail the sweep, whatever the
            configured rate (at 1.0 Optuna asked for every remaining trial, each failed)."""
            self.sweeper.max_failure_rate = 0.0

        def sweep(self, arguments: list[str]) -> None:
            from esper.training.sweep_stop import sweep_stopped

            self._open_storage()
            self._running_before = self._running_trials()
            try:
                return super().sweep(arguments)
            except (SystemExit, KeyboardInterrupt) as exc:
                # The basic launcher runs each trial in this process: a signal ends the trial
                # as it ends a single run (SystemExit(128 + signal)), or, between two trials,
                # as a KeyboardInterrupt, and the sweep with it; the best trial so far is
                # written first (helper-found: it was in the log lines alone, with no
                # optimization_results.yaml)
                signum = (
                    _signal_of(exc.code)
                    if isinstance(exc, SystemExit)
                    else getattr(exc, "signum", 2)  # esper's SignalInterrupt, or Ctrl-C's
                )
                self._settle_asked_trials()
                if signum is not None:
                    self._write_best_so_far(arguments, signum)
                raise
            except Exception:
                # Once stopped, whatever ends Optuna's loop ends the sweep: SweepStopped, a
                # trial of the batch that failed on its own (helper-found: with the rate at 0,
                # Optuna raised it, a traceback and exit 1, by the batch's order), `best_trial`
                # where none completed. esper's SweepStop then says the closing line.
                if sweep_stopped():
                    self._write_best_so_far(arguments)
                    return None
                raise

        def _open_storage(self) -> None:
            """A storage URL Optuna cannot open is one line, exit 2, before any trial
            (helper-found: SQLAlchemy's traceback, and an empty sweep directory left)."""
            import optuna

            from esper.config import first_line
            from esper.preflight import refuse_sweep

            storage = self.sweeper.storage
            if not isinstance(storage, str):
                return
            try:
                optuna.storages.get_storage(storage)
            except Exception as exc:  # noqa: BLE001 - SQLAlchemy's and Optuna's errors alike
                # a password in the URL stays out of the console and the logs (helper-found)
                shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", storage)
                said = first_line(exc).replace(storage, shown)
                raise refuse_sweep(
                    f"hydra.sweeper.storage={shown!r} cannot be opened: {said}; "
                    "allowed: a database URL Optuna opens (sqlite:///optuna.db), or null"
                ) from None

        def _running_trials(self) -> set[int]:
            """The numbers of the stored study's trials running now (none without a storage,
            or before the study exists)."""
            import optuna

            sweeper = self.sweeper
            if not sweeper.storage:
                return set()
            try:
                study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage)
            except KeyError:  # Optuna's "record not found": the sweep creates the study
                return set()
            return {t.number for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))}

        def _settle_asked_trials(self) -> None:
            """A stored study's trials that this sweep asked for and Optuna never told, as the
            basic launcher leaves them when a signal ends the process within a batch: each one
            whose job completed is told its objective, the others failed (helper-found: they
            stayed RUNNING in the storage for good, and a trial completed earlier in the batch
            was lost to the study and to optimization_results.yaml). Trials running before the
            sweep started (another process's) are left alone."""
            import optuna

            sweeper = self.sweeper
            if not sweeper.storage:
                return
            study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage)
            completed = {frozenset(o): v for o, v in self.stop_aware.objectives}
            for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
                if trial.number in self._running_before:
                    continue
                asked = {**trial.params, **trial.user_attrs}  # as Optuna's sweeper formats them
                value = completed.get(frozenset(f"{k}={v}" for k, v in asked.items()))
                if value is None:
                    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial.number, value)

        def _write_best_so_far(self, arguments: list[str], signum: int | None = None) -> None:
            """optimization_results.yaml as Optuna writes it at a sweep's end (`name`,
            `best_params`, `best_value`), from the trials completed before the stop, with
            `interrupted_by` (the signal) and `trials_completed`; none where none completed.
            Without it the best so far was only in the trials' summaries. A study with a
            `storage` is read back, as Optuna's own file does: its best over every sweep of
            that study (helper-found: this sweep's alone disagreed with an uninterrupted one)."""
            import signal

            import optuna
            from omegaconf import OmegaConf

            from esper.training.sweep_stop import sweep_stop_signal

            sweeper = self.sweeper
            signum = signum if signum is not None else sweep_stop_signal()
            if sweeper.storage:
                study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage)
                done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
                best = study.best_trial if done else None
                found = (best.params, best.value, len(done)) if best else None
            else:
                found = self._best_of_this_sweep(arguments)
            if found is None or signum is None:
                log.info("no trial completed before the stop: no optimization_results.yaml")
                return
            params, value, completed = found
            results = {
                "name": "optuna",
                "best_params": params,
                "best_value": value,
                "interrupted_by": signal.Signals(signum).name,
                "trials_completed": completed,
            }
            assert sweeper.config is not None  # set by setup()
            path = f"{sweeper.config.hydra.sweep.dir}/optimization_results.yaml"
            OmegaConf.save(OmegaConf.create(results), path)
            log.info("best of the %d trials completed before the stop: %s", completed, path)

        def _best_of_this_sweep(
            self, arguments: list[str]
        ) -> tuple[dict[str, Any], float, int] | None:
            """An in-memory study's best: from the objectives the launcher saw, its parameters
            those of the search space (the trial's overrides less the fixed ones)."""
            from hydra.core.override_parser.overrides_parser import OverridesParser
            from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

            finished = self.stop_aware.objectives
            if not finished:
                return None
            sweeper = self.sweeper
            maximize = str(sweeper._get_directions()[0]).lower().endswith("maximize")
            pick = max if maximize else min
            overrides, value = pick(finished, key=lambda done: done[1])  # the first of ties
            params_conf = [*sweeper._parse_sweeper_params_config(), *arguments]
            _, fixed = create_params_from_overrides(params_conf)
            parsed = OverridesParser.create().parse_overrides(overrides)
            params = {o.get_key_element(): o.value() for o in parsed}
            return {k: v for k, v in params.items() if k not in fixed}, value, len(finished)


def _signal_of(code: object) -> int | None:
    """The signal a run's exit code says ended it (128 + SIGINT, SIGTERM or SIGHUP), or None."""
    import signal

    stopping = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    return code - 128 if isinstance(code, int) and code - 128 in stopping else None
