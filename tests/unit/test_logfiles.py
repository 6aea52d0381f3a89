"""A log file on a full disk: one line naming it, then its records are dropped; a handler
error that is not the disk's (a bug) keeps logging's traceback."""

from __future__ import annotations

import contextlib
import logging

import pytest

from esper.logfiles import guard_log_files
from tests.conftest import small_disk


def test_a_full_log_file_is_said_once(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("esper.test_logfiles")
    logger.propagate = False
    with small_disk(tmp_path / "disk", "16k") as disk:
        handler = logging.FileHandler(disk / "debug.log")
        logger.addHandler(handler)
        try:
            guard_log_files()
            for i in range(400):  # 400 x 100 bytes: the disk fills part way
                logger.warning("record %04d %s", i, "x" * 88)
            logger.warning("%d is not a number", "text")  # a bug, not the disk
        finally:
            logger.removeHandler(handler)
            with contextlib.suppress(OSError):  # its buffer cannot be flushed either
                handler.close()
    said = capsys.readouterr().err
    [line] = [ln for ln in said.splitlines() if ln.startswith("log file:")]
    assert line == (
        f"log file: cannot write {disk / 'debug.log'}: No space left on device (ENOSPC); "
        "its further lines are dropped"
    )
    assert said.count("--- Logging error ---") == 1 and "TypeError" in said
