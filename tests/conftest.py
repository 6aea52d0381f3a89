"""Shared fixtures: real Hydra composition and an isolated kernel store per test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C's default meaning, in this process and so in every run it starts. A suite
    started in the background (`make test &`, `nohup`) inherits SIGINT ignored and passes it
    on: the tests that press Ctrl-C on a run then waited out their 120 s timeouts (five of
    them, in a slow tier started so here), since a run keeps an ignored signal ignored."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def kernel_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "kernels"
    monkeypatch.setenv("ESPER_KERNEL_STORE", str(store))
    return store


@pytest.fixture
def make_config(tmp_path: Path, kernel_store: Path) -> Callable[..., DictConfig]:
    """Compose conf/ as run.py would, with a run directory under tmp_path."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        run_dir = run_dir or tmp_path / "run"
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose(
                "config",
                overrides=[f"run_dir={run_dir}", "trainer.progress=false", *overrides],
            )

    return make


def shipped_blueprints() -> list[str]:
    """The blueprints Esper ships. The registry holds test modules' blueprints too once those
    are imported (test_async_compile's `explodes_for_test` fails on purpose): which module
    collection reaches first must not decide what a contract over every blueprint covers."""
    from esper import blueprints

    return [
        n for n in blueprints.names() if blueprints.get(n).builder.__module__.startswith("esper.")
    ]


ONE_EARLY_SEED = (
    "policy=random",
    "policy.germinate_probability=1.0",
    "policy.max_seeds=1",
    "logger=none",
    "trainer.checkpoint=false",
)
"""Overrides for a run whose random policy germinates exactly one seed, at epoch 0."""

KEEP_IT = (
    "policy.fossilize_probability=1.0",
    "trainer.max_epochs=12",
    "seeds.gates.min_training_steps=0",
)
"""With ONE_EARLY_SEED: the seed reaches the fossilize decision within the run."""


def own_env(**extra: str) -> dict[str, str]:
    """The environment for a child `python run.py`, as a user's shell gives it: without the
    W&B service this test process may have started (WANDB_SERVICE), which a child would
    otherwise share, so that two children's runs would meet in one service."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "WANDB_SILENT": "true", **extra}


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300):
    """`python run.py ARGS` in a subprocess, as a user types it."""
    full_env = own_env(**(env or {}))
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """moto's S3 server on 127.0.0.1 for the whole session; credentials for it in the env."""
    from tests.s3_support import CREDENTIALS, start_moto

    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server, url = start_moto()
    yield url
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    from tests.s3_support import new_bucket

    return new_bucket(s3_endpoint)


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (`64k`) mounted at `where` (made if missing) for the block: a disk
    that fills up, for real. Skips the test where mounting is not allowed (not root)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:  # lazily where a process still holds a file there (W&B's service may)
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def block_after_first_checkpoint(
    process: subprocess.Popen[str], run_dir: Path, paths: list[str]
) -> None:
    """Make a directory at each of `paths` (relative to `run_dir`) once last.pt exists."""
    blocked = [run_dir / p for p in paths]
    while blocked and process.poll() is None:
        if (run_dir / "checkpoints" / "last.pt").exists():
            with contextlib.suppress(FileExistsError):  # the writer's own file, for a moment
                blocked[0].mkdir()
                blocked.pop(0)
        time.sleep(0.001)
