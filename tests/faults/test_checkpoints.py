"""A checkpoint is data, never code: crafted, truncated, empty, random and incomplete files are
refused before training with one line naming `trainer.resume`, and nothing in them runs. A full
disk while checkpointing keeps the previous checkpoint and names the cause."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from esper.app import build
from esper.atomic import WriteError
from esper.config import ConfigError
from esper.training import checkpoint
from esper.training.checkpoint import FORMAT
from tests.conftest import block_after_first_checkpoint, small_disk

PREFIX = r"trainer\.resume='[^']*': not a valid Esper checkpoint \("


class Payload:
    """Unpickling this would create the marker file: code from the checkpoint running."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle's protocol
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> bytes:
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    root = tmp_path_factory.mktemp("good")
    os.environ["ESPER_KERNEL_STORE"] = str(root / "kernels")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"run_dir={root}",
                "trainer.progress=false",
                "logger=none",
                "trainer.max_epochs=2",
            ],
        )
    build(cfg).run()
    del os.environ["ESPER_KERNEL_STORE"]
    return (root / "checkpoints" / "last.pt").read_bytes()


def resume_from(make_config, path: Path) -> None:
    build(make_config(f"trainer.resume={path}", "logger=none", "trainer.max_epochs=2"))


def test_a_crafted_checkpoint_is_refused_and_nothing_in_it_runs(make_config, tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "crafted.pt"
    torch.save({"format": FORMAT, "config": {}, "model": Payload(marker)}, path)
    with pytest.raises(ConfigError, match=PREFIX + r"it holds objects other than tensors"):
        resume_from(make_config, path)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("empty", r"the file is empty\)"),
        ("truncated", r"a truncated torch file: the zip archive torch.save writes is cut short\)"),
        # adversarial B8 and A104: "holds objects other than tensors ... could run code", "101"
        ("random", r"not a file torch.save wrote: it begins b'.+'\)"),
        ("text", r"not a file torch.save wrote: it begins b'epoc'\)"),
        # helper-found: torch does not check its archive's CRCs (an RNG state's flipped bytes
        # were a traceback at resume; a weight's, a silent resume that then diverged)
        ("flipped", r"a damaged torch file: \S+/data/\d+ fails its checksum\)"),
        ("no_header", r"no esper-checkpoint/1 header\)"),
        ("missing_keys", r"missing model, slots, .*\)"),
    ],
)
def test_a_broken_checkpoint_is_one_clear_line(
    make_config, tmp_path, good_checkpoint, variant, reason
) -> None:
    path = tmp_path / "last.pt"
    if variant == "empty":
        path.write_bytes(b"")
    elif variant == "truncated":
        path.write_bytes(good_checkpoint[: len(good_checkpoint) // 2])
    elif variant == "random":
        path.write_bytes(b"\x11" + random.Random(0).randbytes(4095))  # not a pickle's b"\x80"
    elif variant == "text":
        path.write_text("epoch: 3\n")
    elif variant == "flipped":
        path.write_bytes(good_checkpoint)
        with zipfile.ZipFile(path) as archive:
            member = next(i for i in archive.infolist() if "/data/" in i.filename)
        data = bytearray(good_checkpoint)
        at = member.header_offset  # the local header's own name and extra (padding) lengths
        name_length, extra_length = struct.unpack("<HH", data[at + 26 : at + 30])
        start = at + 30 + name_length + extra_length
        data[start : start + 4] = bytes(255 - b for b in data[start : start + 4])
        path.write_bytes(bytes(data))
    elif variant == "no_header":
        torch.save({"epoch": 3, "model": {}}, path)
    else:
        torch.save({"format": FORMAT, "config": {}, "epoch": 1, "step": 2}, path)
    with pytest.raises(ConfigError, match=PREFIX + reason) as caught:
        resume_from(make_config, path)
    assert "\n" not in str(caught.value)


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_enospc(make_config, tmp_path) -> None:
    run_dir = tmp_path / "run"
    with small_disk(run_dir / "checkpoints", "256k") as disk:
        experiment = build(
            make_config(
                "logger=none",
                "policy=none",
                "trainer.max_epochs=50",
                run_dir=run_dir,
            )
        )

        def fill_after_the_first_checkpoint() -> None:
            while not (disk / "last.pt").exists():
                time.sleep(0.001)
            with (disk / "filler").open("wb") as handle, contextlib.suppress(OSError):
                handle.write(b"\0" * (1 << 20))

        filler = threading.Thread(target=fill_after_the_first_checkpoint, daemon=True)
        filler.start()
        with pytest.raises(WriteError, match=r"No space left on device \(ENOSPC\)"):
            experiment.run()
        filler.join()
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "failed" and "ENOSPC" in summary["error"]
        assert not (disk / "last.pt.tmp").exists(), "no partial file is left"
        _, state = checkpoint.load(str(run_dir))
        assert 0 <= state["epoch"] < 49, "the previous checkpoint is intact and loads"


def test_events_jsonl_that_cannot_grow_names_itself_and_the_run_resumes(tmp_path) -> None:
    """helper-found: events.jsonl, flushed before each checkpoint, is what a full disk hits
    first: an OSError traceback that named no file, a last line cut mid-JSON, and a resume in
    place appended to it (its reader failed with JSONDecodeError). A file-size limit on the
    run's process stops events.jsonl mid-line as a full disk does, without root; the
    checkpoint (35 KB) stays under it."""
    import resource

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (96 << 10, 96 << 10))

    run_dir = tmp_path / "run"
    overrides = ("trainer.max_epochs=40",)
    process = _run_cli_in(tmp_path, run_dir, *overrides, preexec_fn=limit_file_size)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("esper:")]
    assert re.fullmatch(
        r"esper: the run failed: cannot write \S+/events\.jsonl: File too large \(EFBIG\); the "
        r"events before are kept",
        line,
    ), line
    assert not (run_dir / "events.jsonl").read_bytes().endswith(b"\n"), "a line was cut short"

    resumed = _run_cli_in(tmp_path, run_dir, *overrides, f"trainer.resume={run_dir}")
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line whole
    assert events[-1]["kind"] == "run_ended" and events[-1]["status"] == "completed"


BLOCKED = {  # what is made unwritable once the first checkpoint is written, and what is said
    "checkpoint": (
        ["checkpoints/last.pt.tmp"],
        1,
        r"esper: the run failed: cannot write \S+/checkpoints/last\.pt: .*\(EISDIR\); the "
        r"previous file is kept",
    ),
    "checkpoint-and-summary": (
        ["checkpoints/last.pt.tmp", "summary.json.tmp"],
        1,
        r"esper: the run failed: cannot write \S+/checkpoints/last\.pt: .*\(EISDIR\); the "
        r"previous file is kept; and cannot write \S+/summary\.json: .*\(EISDIR\); there is "
        r"no earlier one",
    ),
    # helper-found: the line said "failed" where events.jsonl said completed, and no results
    "summary": (
        ["summary.json.tmp"],
        1,
        r"esper: the run completed, but cannot write \S+/summary\.json: .*\(EISDIR\); there "
        r"is no earlier one",
    ),
}


@pytest.mark.parametrize("blocked", list(BLOCKED))
def test_a_run_that_cannot_write_its_files_says_why_in_one_line(tmp_path, blocked) -> None:
    """A full disk or a read-only run directory while training: one line naming the file and
    the cause, exit 1 (was a Hydra traceback; where summary.json failed as well, the only error
    shown was summary.json's, hiding the checkpoint's). A directory where the temporary file
    goes, made once the first checkpoint is written, fails the next write as a full disk would,
    without root."""
    paths, code, said = BLOCKED[blocked]
    run_dir = tmp_path / "run"
    epochs = 10 if blocked == "summary" else 500
    process = _run_cli_in(tmp_path, run_dir, f"trainer.max_epochs={epochs}")
    block_after_first_checkpoint(process, run_dir, paths)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("esper:")]
    assert len(errors) == 1, stderr[-3000:]
    assert re.fullmatch(said, errors[0]), errors[0]
    if blocked == "summary":
        assert " split  |" in stdout + stderr, "the results are shown"
    if "summary.json.tmp" not in paths:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "failed" and "EISDIR" in summary["error"]
    _, state = checkpoint.load(str(run_dir))
    assert state["epoch"] < epochs - 1 or blocked == "summary", "the previous checkpoint loads"


def test_sigterm_with_summary_unwritable_still_says_interrupted(tmp_path) -> None:
    """helper-found: a preemption whose summary.json could not be written said `the run
    failed`, exit 1, where events.jsonl said interrupted: a scheduler saw a failure."""
    run_dir = tmp_path / "run"
    process = _run_cli_in(tmp_path, run_dir, "trainer.max_epochs=500")
    block_after_first_checkpoint(process, run_dir, ["summary.json.tmp"])
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("esper:")]
    assert len(errors) == 1, stderr[-3000:]
    assert re.fullmatch(
        r"esper: interrupted by SIGTERM during epoch \d+ .*trainer\.resume.*; and cannot write "
        r"\S+/summary\.json: .*",
        errors[0],
    ), errors[0]


def _run_cli_in(
    cwd: Path, run_dir: Path, *overrides: str, preexec_fn: Callable[[], None] | None = None
) -> subprocess.Popen[str]:
    from tests.conftest import ROOT, own_env

    command = [sys.executable, str(ROOT / "run.py"), "logger=none", "policy=none"]
    command += ["trainer.progress=false", f"hydra.run.dir={run_dir}", *overrides]
    env = own_env(ESPER_KERNEL_STORE=str(cwd / "kernels"))
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,  # noqa: PLW1509 - a limit of the child's own, set before exec
    )
