"""hydra-optuna-sweeper's sweeper, stopped by Ctrl-C or SIGTERM as Esper stops a joblib sweep
(esper.training.sweep_stop): the running trials end `interrupted` with their summaries and
resume lines and are recorded failed, no trial is launched after the stop, and the sweep
exits 128 + the signal.

A Hydra plugin must live in the `hydra_plugins` namespace, hence this module; it is
`hydra/sweeper=esper_optuna` (conf/hydra/sweeper/esper_optuna.yaml: Optuna's options, this
`_target_`), which `hparams_search=optuna_growth` selects. Without the `optuna` extra
installed there is no plugin here (and no warning from Hydra's plugin scan)."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

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
            self.sweeper.launcher = StopAwareLauncher(self.sweeper.launcher, self._fail_fast)

        def _fail_fast(self) -> None:
            """Once the sweep stopped: the trials it ended fail the sweep, whatever the
            configured rate (at 1.0 Optuna asked for every remaining trial, each failed)."""
            self.sweeper.max_failure_rate = 0.0

        def sweep(self, arguments: list[str]) -> None:
            from esper.training.sweep_stop import sweep_stopped

            try:
                return super().sweep(arguments)
            except Exception:
                # Once stopped, whatever ends Optuna's loop ends the sweep: SweepStopped, a
                # trial of the batch that failed on its own (helper-found: with the rate at 0,
                # Optuna raised it, a traceback and exit 1, by the batch's order), `best_trial`
                # where none completed. esper's SweepStop then says the closing line.
                if sweep_stopped():
                    return None
                raise
