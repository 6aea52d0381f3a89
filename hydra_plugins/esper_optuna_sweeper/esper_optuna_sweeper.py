"""hydra-optuna-sweeper's sweeper, stopped by Ctrl-C or SIGTERM as Esper stops a joblib sweep
(esper.training.sweep_stop): the running trials end `interrupted` with their summaries and
resume lines, no trial is asked for after the stop, and the sweep exits 128 + the signal.

A Hydra plugin must live in the `hydra_plugins` namespace, hence this module; its
`_target_` is set by `conf/hparams_search/optuna_growth.yaml`. Without the `optuna` extra
installed there is no plugin here (and no warning from Hydra's plugin scan)."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

if find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:  # pip install -e '.[optuna]'
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    class EsperOptunaSweeper(OptunaSweeper):
        """OptunaSweeper (same arguments) whose launcher, once the sweep stopped, returns the
        trials it interrupted failed and launches no more (esper's `StopAwareLauncher`)."""

        def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
            # here, not at the top: Hydra's plugin scan imports this module in every process
            from esper.training.sweep_stop import StopAwareLauncher

            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
            assert self.sweeper.launcher is not None  # set by the setup above
            self.sweeper.launcher = StopAwareLauncher(self.sweeper.launcher)

        def sweep(self, arguments: list[str]) -> None:
            from esper.training.sweep_stop import SweepStopped, sweep_stopped

            try:
                return super().sweep(arguments)
            except SweepStopped:  # esper's SweepStop ends the sweep with its line
                return None
            except ValueError:
                if sweep_stopped():  # Optuna's best_trial where no trial completed
                    return None
                raise
