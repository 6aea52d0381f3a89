"""Kernel stores: where artifacts and their metadata live. The protocol and what stores share.

Every store writes the artifact first and the metadata last, so a reader that finds metadata
always finds a complete artifact to verify. Same spec, two writers: the first index entry wins
and the artifact is content-addressed, so both leave one valid kernel.

The index is shared data like the objects. An entry that does not parse, or that names another
spec or kernel than its key, or an id that is not a SHA-256 (it becomes a file path), is moved
to `quarantine/` and dropped, and that kernel is compiled again: `parse_entry` is that rule,
for every store. The stores themselves: `local_store.LocalStore` (a directory with the SQLite
index of `sqlite_index`) and `s3_store.S3Store`.
"""

from __future__ import annotations

import builtins
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from esper.config import first_line
from esper.contracts import KernelMetadata

DIGEST = re.compile(r"[0-9a-f]{64}")


class MalformedEntry(ValueError):
    """An index entry that cannot be trusted to name the kernel it is filed under."""


def parse_entry(text: Any, spec_key: str, kernel_id: str | None = None) -> KernelMetadata:
    """The metadata of an index entry filed under `spec_key` (and `kernel_id`), or
    MalformedEntry saying why not."""
    try:
        metadata = KernelMetadata.model_validate_json(text)
    except (ValueError, TypeError) as exc:
        raise MalformedEntry(f"not valid metadata: {first_line(exc)}") from None
    if not (DIGEST.fullmatch(metadata.kernel_id) and DIGEST.fullmatch(metadata.spec_key)):
        raise MalformedEntry("its ids are not SHA-256 digests")
    if metadata.spec_key != spec_key or metadata.spec.key() != spec_key:
        raise MalformedEntry("its metadata describes another spec than the one it is filed under")
    if kernel_id is not None and metadata.kernel_id != kernel_id:
        raise MalformedEntry("its metadata names another kernel than the row")
    return metadata


def repair_report(malformed: int, missing: int) -> builtins.list[str]:
    """What `repair` did to a store's index, worded alike for every store."""
    return [
        f"{malformed} malformed index rows quarantined",
        f"{missing} index rows without an artifact dropped",
    ]


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

    def orphans(self, written_before: float) -> builtins.list[str]:
        """Objects no index entry names (a corrupt index set aside, an entry dropped), written
        before `written_before` (a Unix time): nothing will ever load them."""
        ...

    def remove_orphans(self, names: builtins.list[str]) -> None: ...

    def claim(self, spec_key: str) -> bool:
        """Claim the compile of `spec_key` for this job (see `esper.kernels.claims`): True
        when this job should compile it, False while another job holds the claim."""
        ...

    def release(self, spec_key: str) -> None: ...


ORPHAN_GRACE_S = 3600.0
"""An object written this recently is never taken for an orphan: a run may be between writing
it and indexing it."""


def default_store_root() -> Path:
    """Under the user's cache directory, so that every run on the machine shares kernels."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "esper" / "kernels"
