"""W&B failing never stops training: a server that refuses the connection, a full disk under
its files, a directory it cannot write. Each is logged once, the run completes, events.jsonl
and summary.json are whole, and the summary says what happened to W&B."""

from __future__ import annotations

import contextlib
import errno
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, small_disk

pytestmark = pytest.mark.slow  # `python run.py` in subprocesses


def run(tmp_path: Path, *overrides: str, env: dict[str, str] | None = None):
    run_dir = tmp_path / "run"
    result = run_cli(
        f"hydra.run.dir={run_dir}",
        "trainer.progress=false",
        "policy=heuristic",
        "policy.warmup_epochs=1",
        "policy.patience=1",
        "policy.min_delta=1.0",
        *overrides,
        cwd=tmp_path,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "kernels"), **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert summary["status"] == "completed" and summary["metrics"]["test_accuracy"] > 0
    assert [e["kind"] for e in events].count("epoch_ended") == summary["epochs"]
    assert events[-1]["kind"] == "run_ended"
    assert summary["adaptations"], "the run grew while W&B was failing"
    return summary, result.stdout + result.stderr


def test_a_server_that_refuses_the_connection(tmp_path: Path) -> None:
    summary, output = run(
        tmp_path,
        "trainer.max_epochs=8",
        "logger.mode=online",
        env={
            "WANDB_BASE_URL": "http://127.0.0.1:9",
            "WANDB_API_KEY": "x" * 40,
            "WANDB_INIT_TIMEOUT": "5",
        },
    )
    assert summary["wandb"]["mode"] == "failed"
    assert "127.0.0.1:9" in summary["wandb"]["error"]
    assert output.count("W&B failed to start") == 1


def test_a_full_disk_under_the_wandb_files(tmp_path: Path) -> None:
    """Where the disk fills late, W&B's own debug log printed logging's `--- Logging error
    ---` traceback for each of its records, about 140 lines after the results. Now at most one
    line names that file (esper/logfiles.py; tests/unit/test_logfiles.py pins it down, and the
    test below fills the disk as the tables are written)."""
    with small_disk(tmp_path / "wandb_disk", "64k") as disk:
        summary, output = run(tmp_path, "trainer.max_epochs=30", f"logger.dir={disk}")
    [failure] = summary["sink_failures"]
    assert failure.startswith("WandbSink: OSError: "), failure
    assert f"{disk}/wandb/" in failure, "it names W&B's file or directory"
    assert output.count("it is off for the rest of the run") == 1
    assert "Logging error" not in output and "Traceback" not in output
    assert output.count("log file: cannot write") <= 1


def test_a_directory_wandb_cannot_write_is_a_visible_fallback(tmp_path: Path) -> None:
    blocked = tmp_path / "not_a_directory"
    blocked.write_text("a file where W&B's directory should be")
    summary, output = run(tmp_path, "trainer.max_epochs=8", f"logger.dir={blocked}")
    assert summary["wandb"]["mode"] == "offline"
    assert str(blocked) in summary["wandb"]["fallback"]
    assert not summary["wandb"]["run_dir"].startswith(str(blocked))
    assert output.count("W&B could not write under") == 1


def test_a_disk_that_fills_as_wandb_writes_its_tables_is_named(make_config, tmp_path) -> None:
    """The disk full just as the run ends, as W&B copies the tables in: the sink's failure
    names where. (Its OSError names the files here; where W&B's names none, the sink adds its
    run directory: `[Errno 28] No space left on device (writing W&B's files in ...)`.)"""
    import wandb

    from esper.app import build
    from esper.events.wandb_sink import WandbSink

    record = build(make_config("logger=none", "trainer.max_epochs=2")).run()
    with small_disk(tmp_path / "wandb_disk", "1m") as disk:
        sink = WandbSink(disk, {"seed": 0}, silent=True)
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as out:
            while True:  # every block the disk has left
                out.write(b"\0" * 4096)
                out.flush()
        with pytest.raises(OSError) as failed:
            sink.close(record)
        filler.unlink()
        sink.run.finish()  # W&B's service lets go of the disk's files, so that it unmounts
        wandb.teardown()
    assert not disk.is_mount(), "unmounted"
    assert failed.value.errno == errno.ENOSPC
    assert f"{disk}/wandb/offline-run-" in str(failed.value)
