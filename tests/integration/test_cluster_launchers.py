"""Sweeps through the cluster launchers (real Hydra plugins, real processes): submitit's local
executor and a local Ray each run a 2-job sweep that grows, compiling kernels in a worker
process inside the launcher's worker; the Optuna preset runs trials that return val accuracy
at a parameter cost; the Slurm preset composes. Each plugin is an optional extra: a test whose
plugin is absent is skipped with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.conftest import CONF, ROOT, own_env, run_cli

GROWS = (
    "policy.patience=1",
    "policy.warmup_epochs=2",
    "policy.min_delta=1.0",
    "trainer.max_epochs=8",
    "logger=none",
    "trainer.quiet=true",
    "kernels.preflight=false",  # the compile worker inside the launcher's worker compiles
)
PLUGINS = {
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "ray": "hydra_plugins.hydra_ray_launcher",
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(PLUGINS))
def test_a_two_job_sweep_through_the_launcher(launcher: str, tmp_path: Path) -> None:
    pytest.importorskip(PLUGINS[launcher], reason=f"pip install -e '.[{launcher.split('_')[0]}]'")
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        f"hydra/launcher={launcher}",
        "seed=0,1",
        *GROWS,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "kernels")},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads((sweep / job / "summary.json").read_text()) for job in ("0", "1")]
    for summary in summaries:
        assert summary["status"] == "completed" and summary["epochs"] == 8
        assert summary["kernels"], "a seed got its kernel"
        library = summary["kernel_library"]
        assert (library["compile_mode"], library["fallback"]) == ("worker", None)
    assert sum(s["kernel_library"]["compiles"] for s in summaries) >= 1
    report = subprocess.run(
        [sys.executable, "-m", "esper.report", str(sweep), "--no-html"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=own_env(),
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    [row] = [line for line in report.stdout.splitlines() if line.startswith("| all |")]
    assert "| 0,1 |" in row


@pytest.mark.slow
def test_the_optuna_preset_maximises_val_accuracy_at_cost(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install -e '.[optuna]'")
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "hparams_search=optuna_growth",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=1",
        "trainer.max_epochs=8",
        "logger=none",
        "trainer.quiet=true",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "kernels")},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    values = []
    for path in sorted(sweep.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        params = summary["params"]
        values.append(summary["metrics"]["val_accuracy"] - 0.05 * params["seeds"] / 1000)
    assert len(values) == 3
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values))
    assert set(best["best_params"]) == {
        "policy.patience",
        "policy.warmup_epochs",
        "policy.min_delta",
    }


def test_the_slurm_preset_takes_partition_time_gpus_and_cpus_from_config() -> None:
    pytest.importorskip(PLUGINS["submitit_local"], reason="pip install -e '.[slurm]'")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.timeout_min=30",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min) == ("gpu", 30)
    assert (launcher.gpus_per_node, launcher.cpus_per_task) == (1, 8)
