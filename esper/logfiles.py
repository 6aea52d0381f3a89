"""Log files a full disk stops writing: one line each, not a traceback a record.

logging's default, where a handler's write fails, prints `--- Logging error ---` and a
40-line traceback for every record after it: a run whose W&B directory filled up ended with
about 140 such lines from W&B's own debug log, after its results. The failure is said once,
naming the file, and the file's further lines are dropped; any other handler error (a bad
format string: a bug) keeps logging's default.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from esper.atomic import cannot_write


class _SayOnce:
    """A FileHandler's `handleError`: the first OSError in one line on stderr, then silence."""

    def __init__(self, handler: logging.FileHandler) -> None:
        self.handler = handler
        self.default = handler.handleError
        self.said = False

    def __call__(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            self.default(record)
            return
        if not self.said:
            self.said = True
            failure = cannot_write(
                Path(self.handler.baseFilename), exc, "its further lines are dropped"
            )
            sys.stderr.write(f"log file: {failure.strerror}\n")


def guard_log_files() -> None:
    """Give every FileHandler in the process so far (Hydra's run.log, W&B's debug logs) the
    one-line failure. Call it again after something adds handlers (W&B's init does)."""
    loggers = [logging.getLogger()] + [  # a copy: W&B's threads may add loggers meanwhile
        logger
        for logger in list(logging.root.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and not isinstance(
                handler.handleError, _SayOnce
            ):
                setattr(handler, "handleError", _SayOnce(handler))  # noqa: B010 - a method


def to_log_files(line: str) -> None:
    """`line` into every log file the root logger writes (Hydra's run.log), not the console:
    the one line run.py prints on stderr when a run is refused, fails or is interrupted, so
    that the job's directory keeps why it ended (a config error writes no summary.json)."""
    logger = logging.getLogger("esper.run")
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, line, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def leave_log_files() -> None:
    """Stop writing the root logger's log files (Hydra's run.log) from this process: under
    ddp a rank other than 0, whose run directory is rank 0's (helper-found: every adaptation,
    result table and error line of a 2-rank run.log was there twice, the two tables
    disagreeing on where a kernel came from). Its console keeps its warnings."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
