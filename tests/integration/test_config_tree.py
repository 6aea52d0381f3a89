"""The config tree: every option of every group and every preset composes, resolves and validates;
paths, local, debug, trainer variants and optimized_metric do what the configs say; the README's
`python run.py` commands compose. Composition only, apart from one short run and one failing run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from esper.config import ConfigError, OptimizedMetric, validate
from tests.conftest import CONF, ROOT, run_cli

ENV = ("ESPER_OUTPUT_DIR", "ESPER_KERNEL_STORE", "ESPER_DATA_DIR", "ESPER_CIFAR_ROOT")
OPTIONS = sorted((p.parent.name, p.stem) for p in CONF.glob("*/*.yaml"))
PARSER = OverridesParser.create()


def load_run_py() -> Any:
    spec = importlib.util.spec_from_file_location("esper_run_py", ROOT / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUN_PY = load_run_py()


@pytest.fixture(autouse=True)
def plain_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No path variables from the caller's shell; Hydra's runtime config is left unset afterwards."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    HydraConfig.instance().cfg = None


def compose_job(*overrides: str, conf: Path = CONF) -> DictConfig:
    """Compose as `python run.py OVERRIDES` does, and set what Hydra sets when the job starts
    (its output directory, the runtime config), so that `${hydra:...}` resolves."""
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = os.path.abspath(str(cfg.hydra.run.dir))
    HydraConfig.instance().set_config(cfg)
    return cfg


def unvalidated(cfg: DictConfig) -> dict[str, Any]:
    """The job's config as build() sees it: resolved, without the hydra node."""
    node = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The job's config as build() sees it, and validated."""
    container = unvalidated(cfg)
    validate(container)
    return container


NO_CUDA = "trainer.device='cuda': no CUDA device is available on this machine"


def sweep_values(override: Override) -> list[str]:
    """The values a sweep override takes; an Optuna interval, its two ends."""
    if not override.is_sweep_override():
        return []
    if override.value_type == ValueType.INTERVAL_SWEEP:
        interval = override.value()
        return [str(interval.start), str(interval.end)]
    return list(override.sweep_string_iterator())


def single_runs(overrides: list[str]) -> list[list[str]]:
    """A sweep as single runs: each value of each swept key once, the other keys at their first."""
    parsed = PARSER.parse_overrides(overrides)
    values = [sweep_values(o) for o in parsed]
    firsts = [
        f"{o.get_key_element()}={vs[0]}" if vs else o.input_line
        for o, vs in zip(parsed, values, strict=True)
    ]
    runs = [firsts]
    for i, (o, vs) in enumerate(zip(parsed, values, strict=True)):
        runs += [[*firsts[:i], f"{o.get_key_element()}={v}", *firsts[i + 1 :]] for v in vs[1:]]
    return runs


def test_the_enumeration_sees_every_group_and_preset() -> None:
    groups = {g for g, _ in OPTIONS}
    assert {"experiment", "debug", "hparams_search", "trainer", "paths", "hydra"} <= groups
    assert {"default", "cpu", "gpu"} <= {o for g, o in OPTIONS if g == "trainer"}
    assert {"default", "fast"} <= {o for g, o in OPTIONS if g == "debug"}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_resolves_and_validates(group: str, option: str) -> None:
    cfg = compose_job(f"{group}={option}")
    assert cfg.hydra.runtime.choices[group] == option
    if unvalidated(cfg)["trainer"]["device"] == "cuda" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=re.escape(NO_CUDA)):
            resolved(cfg)
        return
    container = resolved(cfg)
    assert container["optimized_metric"] in get_args(OptimizedMetric)
    assert container["run_dir"] == cfg.hydra.runtime.output_dir
    if group == "hparams_search":  # each value the preset sweeps composes too
        for key, value in cfg.hydra.sweeper.params.items():
            for run in single_runs([f"{key}={value}"]):
                resolved(compose_job(f"{group}={option}", *run))


def test_default_paths_are_relative_to_where_run_py_starts() -> None:
    cfg = compose_job()
    container = resolved(cfg)
    assert container["paths"] == {
        "root_dir": ".",
        "data_dir": "./data",
        "output_dir": "./outputs",
        "kernel_store_dir": None,
    }
    assert container["storage"] == {"_target_": "esper.kernels.LocalStore", "root": None}
    runs = Path.cwd() / "outputs" / "runs"
    assert Path(container["run_dir"]).parent.parent == runs
    assert Path(container["run_dir"]).name.endswith("-esper")
    assert str(cfg.hydra.sweep.dir).startswith("./outputs/multiruns/")
    assert cfg.hydra.job.chdir is False


def test_environment_variables_feed_the_paths(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ESPER_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("ESPER_KERNEL_STORE", str(tmp_path / "kernels"))
    monkeypatch.setenv("ESPER_DATA_DIR", str(tmp_path / "data"))
    cfg = compose_job("dataset=cifar10", "model=resnet_small", "blueprints=image")
    container = resolved(cfg)
    assert Path(container["run_dir"]).parent.parent == tmp_path / "out" / "runs"
    assert Path(str(cfg.hydra.sweep.dir)).parent.parent == tmp_path / "out" / "multiruns"
    assert container["storage"]["root"] == str(tmp_path / "kernels")
    assert container["dataset"]["root"] == str(tmp_path / "data")
    monkeypatch.setenv("ESPER_CIFAR_ROOT", str(tmp_path / "cifar"))  # still honoured, and first
    assert resolved(compose_job("dataset=cifar10"))["dataset"]["root"] == str(tmp_path / "cifar")


def test_run_and_sweep_dirs_are_still_overridable(tmp_path: Path) -> None:
    cfg = compose_job(f"hydra.run.dir={tmp_path / 'a'}", f"hydra.sweep.dir={tmp_path / 's'}")
    assert resolved(cfg)["run_dir"] == str(tmp_path / "a")
    assert cfg.hydra.sweep.dir == str(tmp_path / "s")
    cfg = compose_job("paths.output_dir=/elsewhere")
    assert Path(resolved(cfg)["run_dir"]).parent.parent == Path("/elsewhere/runs")


@pytest.mark.parametrize("option", [o for g, o in OPTIONS if g == "debug"])
def test_debug_presets_select_logger_none(option: str) -> None:
    cfg = compose_job(f"debug={option}")
    assert cfg.hydra.runtime.choices.logger == "none"
    container = resolved(cfg)
    assert validate(container).logger.target is None
    assert container["logger"] == OmegaConf.to_container(OmegaConf.load(CONF / "logger/none.yaml"))
    assert 1 <= container["trainer"]["max_epochs"] <= 3
    assert container["tags"] == ["debug"]


def test_debug_default_shows_progress_and_fast_is_one_epoch() -> None:
    default = resolved(compose_job("debug=default"))
    assert (default["trainer"]["max_epochs"], default["trainer"]["progress"]) == (3, True)
    fast = resolved(compose_job("debug=fast"))
    assert (fast["trainer"]["max_epochs"], fast["trainer"]["checkpoint"]) == (1, False)


def test_trainer_variants_inherit_the_default() -> None:
    default = unvalidated(compose_job())["trainer"]
    gpu = unvalidated(compose_job("trainer=gpu"))["trainer"]
    cpu = unvalidated(compose_job("trainer=cpu"))["trainer"]
    assert gpu == {**default, "device": "cuda"}
    assert cpu == {**default, "device": "cpu"}


def test_a_local_config_is_picked_up(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    for stale in (conf / "local").glob("*.yaml"):
        stale.unlink()  # a developer's own local config does not count here
    assert resolved(compose_job(conf=conf))["storage"]["_target_"] == "esper.kernels.LocalStore"

    example = (CONF / "local" / "example.yaml.txt").read_text()
    (conf / "local" / "default.yaml").write_text(example)
    container = resolved(compose_job(conf=conf))
    assert container["paths"]["data_dir"] == "/data/datasets"
    assert Path(container["run_dir"]).parent.parent == Path("/scratch/esper/outputs/runs")
    assert container["storage"]["root"] == "/scratch/esper/kernels"

    uncommented = re.sub(r"(?m)^# ((defaults|storage|  ).*)$", r"\1", example)
    (conf / "local" / "default.yaml").write_text(uncommented)
    cfg = compose_job("paths.data_dir=/mine", conf=conf)
    container = resolved(cfg)
    assert cfg.hydra.runtime.choices.storage == "s3"
    assert container["storage"]["bucket"] == "my-team-kernels"
    assert container["paths"]["data_dir"] == "/mine", "the command line still wins"


def test_local_configs_are_git_ignored_and_the_folder_is_kept() -> None:
    assert (CONF / "local" / ".gitkeep").is_file()
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    check = subprocess.run(
        ["git", "check-ignore", "-q", "conf/local/default.yaml"], cwd=ROOT, check=False
    )
    assert check.returncode == 0
    check = subprocess.run(
        ["git", "check-ignore", "-q", "conf/local/example.yaml.txt"], cwd=ROOT, check=False
    )
    assert check.returncode == 1


@pytest.mark.parametrize(
    "name", ["test_accuracy", "test_loss", "val_acc", "val/accuracy", "wall_s"]
)
def test_a_bad_optimized_metric_names_the_key_and_the_allowed_ones(name: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        resolved(compose_job(f"optimized_metric={name}"))
    (line,) = str(caught.value).splitlines()[1:]
    assert line.strip() == (
        f"optimized_metric={name!r}: Input should be 'train_loss', 'train_accuracy', "
        "'val_loss', 'val_accuracy' or 'val_accuracy_at_cost'"
    )


def test_run_py_returns_the_optimized_metric(make_config, tmp_path: Path) -> None:
    cfg = make_config("debug=fast", "optimized_metric=val_loss", run_dir=tmp_path / "run")
    returned = RUN_PY.main(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert returned == pytest.approx(summary["metrics"]["val_loss"])
    assert returned != pytest.approx(summary["metrics"]["val_accuracy"])


@pytest.mark.slow
def test_run_py_refuses_a_test_metric_before_building(tmp_path: Path) -> None:
    result = run_cli(
        "optimized_metric=test_accuracy",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "k")},
        timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "optimized_metric" in line]
    assert lines == [
        "  optimized_metric='test_accuracy': Input should be 'train_loss', 'train_accuracy', "
        "'val_loss', 'val_accuracy' or 'val_accuracy_at_cost'"
    ]
    assert not (tmp_path / "run" / "events.jsonl").exists(), "nothing was built"


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    lines = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        for line in block.replace("\\\n", " ").splitlines()  # join continued lines
        if line.strip().startswith("python run.py")
    ]
    return [shlex.split(line, comments=True)[2:] for line in lines]


README = readme_commands()


def test_the_readme_has_run_commands() -> None:
    assert len(README) >= 10
    assert any("-m" in args for args in README) and any("debug=fast" in a for a in README)


@pytest.mark.parametrize("args", README, ids=[" ".join(a) for a in README])
def test_readme_commands_compose(args: list[str]) -> None:
    if args[:1] == ["--config-name"]:  # the policy-training command: its own primary config
        from esper.simic.settings import SimicConfig

        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose(args[1], overrides=args[2:], return_hydra_config=False)
        node = OmegaConf.to_container(cfg.simic, resolve=True)
        assert SimicConfig.model_validate(node).tasks
        return
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    for run in single_runs(overrides):
        cfg = compose_job(*run)
        if unvalidated(cfg)["trainer"]["device"] == "cuda" and not torch.cuda.is_available():
            with pytest.raises(ConfigError, match=re.escape(NO_CUDA)):
                resolved(cfg)  # a GPU command, refused in one line on this machine
            continue
        container = resolved(cfg)
        assert container["run_dir"]
