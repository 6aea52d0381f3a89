"""Local kernel store: content-addressed artifact files plus a SQLite index of their metadata.

Writes put the artifact in place first (atomic rename) and the index row last, so a reader that
finds metadata always finds a complete artifact to verify.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from esper.contracts import KernelMetadata

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
CREATE INDEX IF NOT EXISTS kernels_spec_key ON kernels (spec_key);
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

    def put(self, metadata: KernelMetadata, artifact: bytes) -> None:
        path = self._object_path(metadata.kernel_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(artifact)
        os.replace(tmp, path)
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO kernels VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    metadata.kernel_id,
                    metadata.spec_key,
                    metadata.spec.blueprint,
                    metadata.model_dump_json(),
                    len(artifact),
                    metadata.created_at,
                    now,
                ),
            )

    def find(self, spec_key: str) -> KernelMetadata | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT metadata FROM kernels WHERE spec_key = ? ORDER BY created_at LIMIT 1",
                (spec_key,),
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

    def list(self) -> list[KernelMetadata]:
        with self._connect() as db:
            rows = db.execute("SELECT metadata FROM kernels ORDER BY created_at").fetchall()
        return [KernelMetadata.model_validate_json(r[0]) for r in rows]

    def quarantine(self, kernel_id: str) -> Path:
        """Move a bad object aside (kept for inspection) and drop its index row."""
        target = self.root / "quarantine" / f"{kernel_id}.{int(time.time() * 1000)}.pt2"
        target.parent.mkdir(parents=True, exist_ok=True)
        path = self._object_path(kernel_id)
        if path.exists():
            shutil.move(str(path), target)
        with self._connect() as db:
            db.execute("DELETE FROM kernels WHERE kernel_id = ?", (kernel_id,))
        return target
