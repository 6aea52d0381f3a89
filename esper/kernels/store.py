"""Kernel stores: where artifacts and their metadata live. Local (directory + SQLite) here.

Every store writes the artifact first and the metadata last, so a reader that finds metadata
always finds a complete artifact to verify. Same spec, two writers: the first index entry wins
and the artifact is content-addressed, so both leave one valid kernel.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from esper.contracts import KernelMetadata


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

    def quarantined(self) -> list[str]: ...

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


class LocalStore:
    kind = "local"

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_store_root()
        try:
            (self.root / "objects").mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OSError(
                f"storage.root={str(self.root)!r} is not a usable directory: {exc}"
            ) from exc

    def describe(self) -> str:
        return str(self.root)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / "index.sqlite", timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def _object_path(self, kernel_id: str) -> Path:
        return self.root / "objects" / kernel_id[:2] / f"{kernel_id}.pt2"

    def put(self, metadata: KernelMetadata, artifact: bytes) -> bool:
        path = self._object_path(metadata.kernel_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(artifact)
        os.replace(tmp, path)
        with self._connect() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO kernels VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    metadata.kernel_id,
                    metadata.spec_key,
                    metadata.spec.blueprint,
                    metadata.model_dump_json(),
                    len(artifact),
                    metadata.created_at,
                    time.time(),
                ),
            )
            return cursor.rowcount == 1

    def find(self, spec_key: str) -> KernelMetadata | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT metadata FROM kernels WHERE spec_key = ?", (spec_key,)
            ).fetchone()
        return KernelMetadata.model_validate_json(row[0]) if row else None

    def get_artifact(self, kernel_id: str) -> bytes:
        path = self._object_path(kernel_id)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"kernel {kernel_id[:16]}: indexed in {self.root} but its artifact {path} is missing"
            ) from None

    def touch(self, kernel_id: str) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE kernels SET last_used = ? WHERE kernel_id = ?", (time.time(), kernel_id)
            )

    def list(self) -> list[StoredKernel]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT metadata, size, last_used FROM kernels ORDER BY created_at"
            ).fetchall()
        return [StoredKernel(KernelMetadata.model_validate_json(m), s, u) for m, s, u in rows]

    def quarantine(self, kernel_id: str, spec_key: str | None = None) -> str:
        """Move a bad object aside (kept for inspection) and drop its index row."""
        target = self.root / "quarantine" / f"{kernel_id}.{time.time_ns()}.pt2"
        target.parent.mkdir(parents=True, exist_ok=True)
        path = self._object_path(kernel_id)
        if path.exists():
            shutil.move(str(path), target)
        with self._connect() as db:
            db.execute("DELETE FROM kernels WHERE kernel_id = ?", (kernel_id,))
        return str(target)

    def quarantined(self) -> list[str]:
        folder = self.root / "quarantine"
        return sorted(str(p) for p in folder.iterdir()) if folder.exists() else []

    def remove(self, kernel_id: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM kernels WHERE kernel_id = ?", (kernel_id,))
        self._object_path(kernel_id).unlink(missing_ok=True)

    def remove_quarantined(self) -> int:
        paths = self.quarantined()
        for p in paths:
            Path(p).unlink()
        return len(paths)
