"""Compile claims: across the jobs of a sweep that share a store, each kernel is compiled once.

A job about to compile a kernel the store lacks first claims its spec key in the store (an
exclusive create: a file created with O_EXCL on disk, an S3 put with `If-None-Match: *`). The
claimant compiles, stores and releases; every other job waits for the kernel to appear in the
store and loads it. A claim outlives a killed claimant by at most `CLAIM_LEASE_S` (on one
machine a claim whose process is gone is taken over at once), so a crash never blocks a sweep
for good; a claimant whose compile failed releases it, and the next job tries for itself.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from esper.atomic import cannot_write

CLAIM_LEASE_S = 300.0
"""How old a claim may be before another job takes it over (the claimant is presumed dead)."""
POLL_S = 0.1
"""How often a waiting job looks for the claimed kernel in the store."""


def owner() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale(claim: object, age_s: float) -> bool:
    """A claim is stale past its lease, or at once when its process is gone from this host. A
    claim that is not a claimant's record (garbage, another tool's file) counts by age alone."""
    if age_s > CLAIM_LEASE_S:
        return True
    if not isinstance(claim, dict):
        return False
    pid = claim.get("pid")
    if claim.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    return not 0 < pid < 2**31 or not _alive(pid)


class WaitInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived while this job waited for another job's compile: the run ends
    `interrupted` (never mistaken for a failed kernel, which would cull the seed)."""


class FileClaims:
    """Claims as files under a local store's `claims/` directory."""

    def __init__(self, root: Path) -> None:
        self.root = root / "claims"

    def claim(self, spec_key: str) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{spec_key}.claim"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    age = time.time() - path.stat().st_mtime
                except OSError:
                    continue  # released meanwhile: try again
                try:
                    held: object = json.loads(path.read_text() or "null")
                except (OSError, ValueError):
                    held = None  # being written, or not a claim: its age decides
                if not stale(held, age):
                    return False
                path.unlink(missing_ok=True)  # a dead claimant's: take it over
                continue
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(json.dumps(owner()))
            except OSError as exc:  # a full disk: not the blueprint's fault
                path.unlink(missing_ok=True)
                raise cannot_write(path, exc, "nothing was compiled") from None
            return True
        return False

    def release(self, spec_key: str) -> None:
        (self.root / f"{spec_key}.claim").unlink(missing_ok=True)
