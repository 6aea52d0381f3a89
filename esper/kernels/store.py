"""Kernel stores: where artifacts and their metadata live. Local (directory + SQLite) here.

Every store writes the artifact first and the metadata last, so a reader that finds metadata
always finds a complete artifact to verify. Same spec, two writers: the first index entry wins
and the artifact is content-addressed, so both leave one valid kernel.

The index is shared data like the objects. An entry that does not parse, or that names another
spec or kernel than its key, or an id that is not a SHA-256 (it becomes a file path), is moved
to `quarantine/` and dropped, and that kernel is compiled again. A local database that SQLite
reports as corrupt (random bytes, truncated) is moved to `quarantine/` whole and a fresh index
started. The objects cannot rebuild it: they hold no spec, characterisation or compile time.
So the kernels it listed compile again when asked for, which rewrites the same objects (they
are content-addressed). `python -m esper.kernels tidy --repair` does all of this on request.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from esper.contracts import KernelMetadata
from esper.kernels.safe_load import KernelIntegrityError

log = logging.getLogger(__name__)
T = TypeVar("T")
DIGEST = re.compile(r"[0-9a-f]{64}")
CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


class MalformedEntry(ValueError):
    """An index entry that cannot be trusted to name the kernel it is filed under."""


def parse_entry(text: Any, spec_key: str, kernel_id: str | None = None) -> KernelMetadata:
    """The metadata of an index entry filed under `spec_key` (and `kernel_id`), or
    MalformedEntry saying why not."""
    try:
        metadata = KernelMetadata.model_validate_json(text)
    except (ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MalformedEntry(f"not valid metadata: {type(exc).__name__} {first}") from None
    if not (DIGEST.fullmatch(metadata.kernel_id) and DIGEST.fullmatch(metadata.spec_key)):
        raise MalformedEntry("its ids are not SHA-256 digests")
    if metadata.spec_key != spec_key or metadata.spec.key() != spec_key:
        raise MalformedEntry("its metadata describes another spec than the one it is filed under")
    if kernel_id is not None and metadata.kernel_id != kernel_id:
        raise MalformedEntry("its metadata names another kernel than the row")
    return metadata


@dataclass(frozen=True)
class StoredKernel:
    metadata: KernelMetadata
    size: int
    last_used: float


class KernelStore(Protocol):
    kind: str

    def describe(self) -> str: ...

    def put(self, metadata: KernelMetadata, artifact: bytes) -> bool: ...

    def find(self, spec_key: str) -> KernelMetadata | None: ...

    def get_artifact(self, kernel_id: str) -> bytes: ...

    def touch(self, kernel_id: str) -> None: ...

    def list(self) -> list[StoredKernel]: ...

    def quarantine(self, kernel_id: str, spec_key: str | None = None) -> str: ...

    def quarantined(self) -> builtins.list[str]: ...

    def remove(self, kernel_id: str) -> None: ...

    def remove_quarantined(self) -> int: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS kernels (
    kernel_id TEXT PRIMARY KEY,
    spec_key TEXT NOT NULL,
    blueprint TEXT NOT NULL,
    metadata TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS kernels_spec_key ON kernels (spec_key);
"""


def default_store_root() -> Path:
    """Under the user's cache directory, so that every run on the machine shares kernels."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "esper" / "kernels"


def _is_corrupt(exc: sqlite3.Error) -> bool:
    """Corrupt as opposed to locked, read-only or unreachable (OperationalError and kin)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code in CORRUPT_CODES or type(exc) is sqlite3.DatabaseError


class LocalStore:
    kind = "local"

    def __init__(self, root: str | Path | None = None, create: bool = True) -> None:
        """`create=False` opens only a directory that already is a store (the CLI's way)."""
        self.root = Path(root).expanduser() if root else default_store_root()
        self.skipped_rows = 0
        self._notices: list[str] = []
        if not create:
            self._require_existing()
        try:
            (self.root / "objects").mkdir(parents=True, exist_ok=True)
            self._open_index()
        except (OSError, sqlite3.Error) as exc:
            raise OSError(
                f"storage.root={str(self.root)!r} is not a usable directory: {exc}"
            ) from exc

    def _require_existing(self) -> None:
        if not self.root.exists():
            raise FileNotFoundError(f"{self.root}: no kernel store there (no such directory)")
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root}: not a directory")
        if not ((self.root / "objects").is_dir() or (self.root / "index.sqlite").is_file()):
            raise FileNotFoundError(
                f"{self.root}: not a kernel store (it has no objects/ or index.sqlite)"
            )

    def describe(self) -> str:
        return str(self.root)

    # -- the index -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / "index.sqlite", timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
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

    def _open_index(self) -> None:
        """Create the schema; an index SQLite calls corrupt is set aside first."""
        with self._index_lock():
            try:
                with contextlib.closing(self._connect()) as db, db:
                    db.executescript(SCHEMA)
                    verdict = db.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {verdict}")
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    raise
                self._set_index_aside(exc)
                with contextlib.closing(self._connect()) as db, db:
                    db.executescript(SCHEMA)

    def _set_index_aside(self, exc: sqlite3.Error) -> None:
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
        self._notices.append(notice)

    def _run(self, action: Callable[[sqlite3.Connection], T]) -> T:
        """One index transaction; if SQLite finds the index corrupt, set it aside and run the
        transaction again on a fresh one."""
        try:
            with contextlib.closing(self._connect()) as db, db:
                return action(db)
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
        self._open_index()
        with contextlib.closing(self._connect()) as db, db:
            return action(db)

    def take_notices(self) -> list[str]:
        """What this store repaired by itself (a corrupt index set aside), once."""
        notices, self._notices = self._notices, []
        return notices

    def _quarantine_row(self, kernel_id: Any, spec_key: Any, text: Any, reason: str) -> str:
        folder = self.root / "quarantine"
        folder.mkdir(parents=True, exist_ok=True)
        label = re.sub(r"[^0-9a-f]", "_", str(spec_key)[:16])  # it names a file
        target = folder / f"index-row-{label}.{time.time_ns()}.json"
        record = {"kernel_id": kernel_id, "spec_key": spec_key, "metadata": text, "why": reason}
        target.write_text(json.dumps(record, default=repr))
        self._run(
            lambda db: db.execute(
                "DELETE FROM kernels WHERE kernel_id = ? AND spec_key = ?", (kernel_id, spec_key)
            )
        )
        log.warning(
            "index row %s in %s: %s; quarantined to %s", spec_key, self.root, reason, target
        )
        return str(target)

    # -- the store protocol ----------------------------------------------------------------
    def _object_path(self, kernel_id: str) -> Path:
        if not DIGEST.fullmatch(kernel_id):
            raise KernelIntegrityError(f"kernel id {kernel_id[:80]!r} is not a SHA-256 digest")
        return self.root / "objects" / kernel_id[:2] / f"{kernel_id}.pt2"

    def put(self, metadata: KernelMetadata, artifact: bytes) -> bool:
        path = self._object_path(metadata.kernel_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(artifact)
        os.replace(tmp, path)
        row = (
            metadata.kernel_id,
            metadata.spec_key,
            metadata.spec.blueprint,
            metadata.model_dump_json(),
            len(artifact),
            metadata.created_at,
            time.time(),
        )
        return (
            self._run(
                lambda db: db.execute(
                    "INSERT OR IGNORE INTO kernels VALUES (?, ?, ?, ?, ?, ?, ?)", row
                )
            ).rowcount
            == 1
        )

    def find(self, spec_key: str) -> KernelMetadata | None:
        """The entry for `spec_key`; KernelIntegrityError (after quarantining what was wrong)
        for a malformed row, or once after the index itself was set aside."""
        row = self._run(
            lambda db: db.execute(
                "SELECT kernel_id, spec_key, metadata FROM kernels WHERE spec_key = ?", (spec_key,)
            ).fetchone()
        )
        if self._notices:
            raise KernelIntegrityError("; ".join(self.take_notices()))
        if row is None:
            return None
        try:
            return parse_entry(row[2], spec_key, row[0])
        except MalformedEntry as exc:
            where = self._quarantine_row(row[0], row[1], row[2], str(exc))
            raise KernelIntegrityError(
                f"index row for spec {spec_key[:16]} in {self.root}: {exc}; quarantined to {where}"
            ) from None

    def get_artifact(self, kernel_id: str) -> bytes:
        path = self._object_path(kernel_id)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"kernel {kernel_id[:16]}: indexed in {self.root} but its artifact {path} is missing"
            ) from None

    def touch(self, kernel_id: str) -> None:
        self._run(
            lambda db: db.execute(
                "UPDATE kernels SET last_used = ? WHERE kernel_id = ?", (time.time(), kernel_id)
            )
        )

    def list(self) -> list[StoredKernel]:
        """Every well-formed entry; malformed ones are counted in `skipped_rows` and logged."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT kernel_id, spec_key, metadata, size, last_used FROM kernels "
                "ORDER BY created_at"
            ).fetchall()
        )
        kernels = []
        for kernel_id, spec_key, text, size, used in rows:
            try:
                kernels.append(StoredKernel(parse_entry(text, spec_key, kernel_id), size, used))
            except MalformedEntry:
                continue
        self.skipped_rows = len(rows) - len(kernels)
        if self.skipped_rows:
            log.warning(
                "%d malformed index rows in %s skipped; `python -m esper.kernels tidy --repair` "
                "quarantines them",
                self.skipped_rows,
                self.root,
            )
        return kernels

    def quarantine(self, kernel_id: str, spec_key: str | None = None) -> str:
        """Move a bad object aside (kept for inspection) and drop its index row."""
        name = kernel_id if DIGEST.fullmatch(kernel_id) else "not-a-digest"
        target = self.root / "quarantine" / f"{name}.{time.time_ns()}.pt2"
        target.parent.mkdir(parents=True, exist_ok=True)
        if DIGEST.fullmatch(kernel_id) and self._object_path(kernel_id).exists():
            shutil.move(str(self._object_path(kernel_id)), target)
        self._run(lambda db: db.execute("DELETE FROM kernels WHERE kernel_id = ?", (kernel_id,)))
        return str(target)

    def quarantined(self) -> builtins.list[str]:
        folder = self.root / "quarantine"
        return sorted(str(p) for p in folder.iterdir()) if folder.exists() else []

    def remove(self, kernel_id: str) -> None:
        self._run(lambda db: db.execute("DELETE FROM kernels WHERE kernel_id = ?", (kernel_id,)))
        self._object_path(kernel_id).unlink(missing_ok=True)

    def remove_quarantined(self) -> int:
        paths = self.quarantined()
        for p in paths:
            Path(p).unlink()
        return len(paths)

    def repair(self) -> builtins.list[str]:
        """Quarantine malformed rows, drop rows whose artifact is gone; say what was done."""
        report = self.take_notices()
        rows = self._run(
            lambda db: db.execute("SELECT kernel_id, spec_key, metadata FROM kernels").fetchall()
        )
        malformed = missing = 0
        for kernel_id, spec_key, text in rows:
            try:
                metadata = parse_entry(text, spec_key, kernel_id)
            except MalformedEntry as exc:
                self._quarantine_row(kernel_id, spec_key, text, str(exc))
                malformed += 1
                continue
            if not self._object_path(metadata.kernel_id).is_file():
                self.remove(metadata.kernel_id)
                missing += 1
        indexed = {row[0] for row in rows}
        orphans = [p for p in (self.root / "objects").glob("*/*.pt2") if p.stem not in indexed]
        if malformed or missing or report:
            report.append(f"{malformed} malformed index rows quarantined")
            report.append(f"{missing} index rows without an artifact dropped")
        else:
            report.append(f"index is sound: {len(rows)} rows in {self.root / 'index.sqlite'}")
        if orphans:
            report.append(
                f"{len(orphans)} objects have no index row (kept: compiling their spec again "
                "rewrites them)"
            )
        return report
