"""The local kernel store: content-addressed objects in a directory, indexed by SQLite.

Layout under `root`: `objects/<id[:2]>/<kernel_id>.pt2` (artifact, written to a temporary file
and renamed into place), `index.sqlite` (metadata, a row per spec: one object may serve
several specs, see `sqlite_index`), and `quarantine/` for
objects, rows and whole indexes that failed verification. Ids become file paths, so an id that
is not a SHA-256 digest is refused before it touches the file system.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from esper.atomic import WriteError, cannot_write
from esper.contracts import KernelMetadata
from esper.kernels.claims import FileClaims
from esper.kernels.integrity import KernelIntegrityError
from esper.kernels.sqlite_index import SqliteIndex
from esper.kernels.store import (
    DIGEST,
    MalformedEntry,
    StoredKernel,
    default_store_root,
    parse_entry,
    repair_report,
)

# Logged under the name it had when store and index were one module.
log = logging.getLogger("esper.kernels.store")


class LocalStore:
    kind = "local"

    def __init__(self, root: str | Path | None = None, create: bool = True) -> None:
        """`create=False` opens only a directory that already is a store (the CLI's way)."""
        self.root = Path(root).expanduser() if root else default_store_root()
        self.skipped_rows = 0
        if not create:
            self._require_existing()
        try:
            (self.root / "objects").mkdir(parents=True, exist_ok=True)
            self._index = SqliteIndex(self.root)
            self._claims = FileClaims(self.root)
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

    def take_notices(self) -> list[str]:
        """What this store repaired by itself (a corrupt index set aside), once."""
        return self._index.take_notices()

    # -- the store protocol ----------------------------------------------------------------
    def _object_path(self, kernel_id: str) -> Path:
        if not DIGEST.fullmatch(kernel_id):
            raise KernelIntegrityError(f"kernel id {kernel_id[:80]!r} is not a SHA-256 digest")
        return self.root / "objects" / kernel_id[:2] / f"{kernel_id}.pt2"

    def put(self, metadata: KernelMetadata, artifact: bytes) -> bool:
        path = self._object_path(metadata.kernel_id)
        tmp = None
        stored_before = path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(artifact)
            os.replace(tmp, path)
        except OSError as exc:  # a full disk: not the blueprint's fault, and no litter left
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise cannot_write(path, exc, "the kernel is not stored") from None
        row = (
            metadata.kernel_id,
            metadata.spec_key,
            metadata.spec.blueprint,
            metadata.model_dump_json(),
            len(artifact),
            metadata.created_at,
            time.time(),
        )
        try:
            inserted = self._index.run(
                lambda db: db.execute(
                    "INSERT OR IGNORE INTO kernels VALUES (?, ?, ?, ?, ?, ?, ?)", row
                )
            ).rowcount
        except WriteError:  # the index is full: an object it does not list is litter
            if not stored_before:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        return inserted == 1

    def find(self, spec_key: str) -> KernelMetadata | None:
        """The entry for `spec_key`; KernelIntegrityError (after quarantining what was wrong)
        for a malformed row, or once after the index itself was set aside."""
        row = self._index.run(
            lambda db: db.execute(
                "SELECT kernel_id, spec_key, metadata FROM kernels WHERE spec_key = ?", (spec_key,)
            ).fetchone()
        )
        if self._index.notices:
            raise KernelIntegrityError("; ".join(self.take_notices()))
        if row is None:
            return None
        try:
            return parse_entry(row[2], spec_key, row[0])
        except MalformedEntry as exc:
            where = self._index.quarantine_row(row[0], row[1], row[2], str(exc))
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
        self._index.run(
            lambda db: db.execute(
                "UPDATE kernels SET last_used = ? WHERE kernel_id = ?", (time.time(), kernel_id)
            )
        )

    def list(self) -> list[StoredKernel]:
        """Every well-formed entry; malformed ones are counted in `skipped_rows` and logged."""
        rows = self._index.run(
            lambda db: db.execute(
                "SELECT kernel_id, spec_key, metadata, size, last_used FROM kernels "
                "ORDER BY created_at"
            ).fetchall()
        )
        kernels = []
        for kernel_id, spec_key, text, size, used in rows:
            try:
                metadata = parse_entry(text, spec_key, kernel_id)
            except MalformedEntry:
                continue
            if _bad_numbers(size, used) is None:
                kernels.append(StoredKernel(metadata, size, used))
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
        self._index.delete(kernel_id)
        return str(target)

    def quarantined(self) -> builtins.list[str]:
        folder = self.root / "quarantine"
        return sorted(str(p) for p in folder.iterdir()) if folder.exists() else []

    def remove(self, kernel_id: str) -> None:
        self._index.delete(kernel_id)
        self._object_path(kernel_id).unlink(missing_ok=True)

    def remove_quarantined(self) -> int:
        paths = self.quarantined()
        for p in paths:
            Path(p).unlink()
        return len(paths)

    def orphans(self, written_before: float) -> builtins.list[str]:
        indexed = {
            row[0]
            for row in self._index.run(
                lambda db: db.execute("SELECT kernel_id FROM kernels").fetchall()
            )
        }
        return sorted(
            str(path)
            for path in (self.root / "objects").glob("*/*.pt2")
            if path.stem not in indexed and path.stat().st_mtime < written_before
        )

    def remove_orphans(self, names: builtins.list[str]) -> None:
        for name in names:
            Path(name).unlink(missing_ok=True)

    def repair(self) -> builtins.list[str]:
        """Quarantine malformed rows, drop rows whose artifact is gone; say what was done."""
        report = self.take_notices()
        rows = self._index.run(
            lambda db: db.execute(
                "SELECT kernel_id, spec_key, metadata, size, last_used FROM kernels"
            ).fetchall()
        )
        malformed = missing = 0
        for kernel_id, spec_key, text, size, used in rows:
            try:
                metadata = parse_entry(text, spec_key, kernel_id)
                wrong = _bad_numbers(size, used)
                if wrong is not None:
                    raise MalformedEntry(wrong)
            except MalformedEntry as exc:
                self._index.quarantine_row(kernel_id, spec_key, text, str(exc))
                malformed += 1
                continue
            if not self._object_path(metadata.kernel_id).is_file():
                self.remove(metadata.kernel_id)
                missing += 1
        indexed = {row[0] for row in rows}
        orphans = [p for p in (self.root / "objects").glob("*/*.pt2") if p.stem not in indexed]
        if malformed or missing or report:
            report.extend(repair_report(malformed, missing))
        else:
            report.append(f"index is sound: {len(rows)} rows in {self.root / 'index.sqlite'}")
        if orphans:
            report.append(
                f"{len(orphans)} objects have no index row (kept: compiling their spec again "
                "indexes them; `tidy --unused-days N` removes them once N days old)"
            )
        return report

    def claim(self, spec_key: str) -> bool:
        if not DIGEST.fullmatch(spec_key):
            raise ValueError(f"spec key {spec_key[:20]!r} is not a SHA-256 digest")
        return self._claims.claim(spec_key)

    def release(self, spec_key: str) -> None:
        if DIGEST.fullmatch(spec_key):
            self._claims.release(spec_key)


def _bad_numbers(size: object, last_used: object) -> str | None:
    """What is wrong with a row's size and last use, or None (helper-found: a `last_used` of
    1e20 or 'abc' passed `tidy --repair`, then failed `list` and `tidy` as a whole)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return f"size {size!r} is not a byte count"
    if not isinstance(last_used, int | float) or not 0 <= last_used < LATEST_TIME:
        return f"last_used {last_used!r} is not a time"
    return None


LATEST_TIME = 253402300800.0
"""Year 10000: a `last_used` beyond it is no time a machine wrote (and `time.localtime` fails)."""
