"""The local store's index: one SQLite database, kept usable when it is damaged.

A local database that SQLite reports as corrupt (random bytes, truncated) is moved to
`quarantine/` whole and a fresh index started. The objects cannot rebuild it: they hold no
spec, characterisation or compile time. So the kernels it listed compile again when asked for,
which rewrites the same objects (they are content-addressed). What was set aside is kept as a
notice for the caller to report once. A single row that cannot be trusted is written to
`quarantine/` as JSON and deleted. `python -m esper.kernels tidy --repair` does all of this on
request.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from esper.atomic import WriteError, cannot_write

# The local store logs under one name, as it did when index and store were one module.
log = logging.getLogger("esper.kernels.store")
T = TypeVar("T")
CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
WRITE_ERRNOS = {
    "SQLITE_FULL": errno.ENOSPC,
    "SQLITE_READONLY": errno.EROFS,
    "SQLITE_IOERR": errno.EIO,
}
"""SQLite's errors that are a disk's (its name, or the prefix of SQLITE_IOERR_WRITE and kin)."""

TABLE = """
CREATE TABLE IF NOT EXISTS kernels (
    kernel_id TEXT NOT NULL,
    spec_key TEXT PRIMARY KEY,
    blueprint TEXT NOT NULL,
    metadata TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    last_used REAL NOT NULL
);
"""
SCHEMA = TABLE + "CREATE INDEX IF NOT EXISTS kernels_kernel_id ON kernels (kernel_id);\n"
"""A row per spec: one artifact may serve several specs (a builder whose file changed without
changing its graph: the same bytes under a new key). Keyed by kernel id before, such a spec
was never indexed and compiled again in every run (helper-found)."""

KEYED_BY_ID = (
    "BEGIN IMMEDIATE;\n"
    "ALTER TABLE kernels RENAME TO kernels_keyed_by_id;\n"
    "DROP INDEX IF EXISTS kernels_spec_key;\n"
    + TABLE
    + "INSERT INTO kernels SELECT kernel_id, spec_key, blueprint, metadata, size, created_at, "
    "last_used FROM kernels_keyed_by_id;\n"
    "DROP TABLE kernels_keyed_by_id;\n"
    "COMMIT;\n"
)
"""An index from before rows were keyed by spec, rewritten with its rows."""


def write_failure(exc: sqlite3.Error, path: Path) -> WriteError | None:
    """A full disk or a read-only index as the WriteError a file write raises, naming the file
    and the cause (helper-found: `OperationalError: database or disk is full` culled the seed
    whose kernel it was, or in preflight blamed the blueprint); None for anything else."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    for prefix, code in WRITE_ERRNOS.items():
        if name.startswith(prefix):
            return cannot_write(path, OSError(code, str(exc)), "the index is as it was")
    return None


def is_corrupt(exc: sqlite3.Error) -> bool:
    """Corrupt as opposed to locked, read-only or unreachable (OperationalError and kin)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code in CORRUPT_CODES or type(exc) is sqlite3.DatabaseError


class SqliteIndex:
    """`index.sqlite` under `root`: opened (and set aside if corrupt) when made."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.notices: list[str] = []
        self._open()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / "index.sqlite", timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One process at a time checks and replaces the index (best effort: POSIX only)."""
        try:
            import fcntl

            handle = open(self.root / "index.lock", "a+")  # noqa: SIM115 - held across yield
        except (ImportError, OSError):
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _open(self) -> None:
        """Create the schema; an index SQLite calls corrupt is set aside first."""
        with self._lock():
            try:
                with contextlib.closing(self._connect()) as db, db:
                    key = [row[1] for row in db.execute("PRAGMA table_info(kernels)") if row[5]]
                    if key == ["kernel_id"]:
                        db.executescript(KEYED_BY_ID)
                    db.executescript(SCHEMA)
                    verdict = db.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {verdict}")
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                self._set_aside(exc)
                with contextlib.closing(self._connect()) as db, db:
                    db.executescript(SCHEMA)

    def _set_aside(self, exc: sqlite3.Error) -> None:
        folder = self.root / "quarantine"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.time_ns()
        for suffix in ("", "-wal", "-shm"):
            path = self.root / f"index.sqlite{suffix}"
            if path.exists():
                os.replace(path, folder / f"index.sqlite{suffix}.{stamp}")
        notice = (
            f"kernel index {self.root / 'index.sqlite'} is corrupt ({exc}); moved to "
            f"{folder / f'index.sqlite.{stamp}'} (quarantine) and started a fresh index: "
            "its kernels compile again when asked for"
        )
        log.warning(notice)
        self.notices.append(notice)

    def run(self, action: Callable[[sqlite3.Connection], T]) -> T:
        """One index transaction; if SQLite finds the index corrupt, set it aside and run the
        transaction again on a fresh one."""
        try:
            with contextlib.closing(self._connect()) as db, db:
                return action(db)
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise write_failure(exc, self.root / "index.sqlite") or exc from None
        self._open()
        with contextlib.closing(self._connect()) as db, db:
            return action(db)

    def take_notices(self) -> list[str]:
        """What was repaired here by itself (a corrupt index set aside), once."""
        notices, self.notices = self.notices, []
        return notices

    def delete(self, kernel_id: str) -> None:
        """Drop the row of `kernel_id`, if any."""
        self.run(lambda db: db.execute("DELETE FROM kernels WHERE kernel_id = ?", (kernel_id,)))

    def quarantine_row(self, kernel_id: Any, spec_key: Any, text: Any, reason: str) -> str:
        """Write an untrusted row to `quarantine/` as JSON (kept for inspection), delete it,
        and say where it went."""
        folder = self.root / "quarantine"
        folder.mkdir(parents=True, exist_ok=True)
        label = re.sub(r"[^0-9a-f]", "_", str(spec_key)[:16])  # it names a file
        target = folder / f"index-row-{label}.{time.time_ns()}.json"
        record = {"kernel_id": kernel_id, "spec_key": spec_key, "metadata": text, "why": reason}
        target.write_text(json.dumps(record, default=repr))
        self.run(
            lambda db: db.execute(
                "DELETE FROM kernels WHERE kernel_id = ? AND spec_key = ?", (kernel_id, spec_key)
            )
        )
        log.warning(
            "index row %s in %s: %s; quarantined to %s", spec_key, self.root, reason, target
        )
        return str(target)
