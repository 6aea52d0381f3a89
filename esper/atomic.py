"""Files written whole or not at all: summary.json, checkpoints, policy weights.

Write next to the target, flush to disk, rename: a reader (or a crash) sees the old file or the
new one, never a part. A failed write removes its temporary file and names the cause (ENOSPC,
EACCES, ...), keeping the previous file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from pathlib import Path
from typing import Any

import torch


class WriteError(OSError):
    """A file could not be written; the previous one is still in place."""


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # e.g. a parent that is a file: the error is above
            tmp.unlink(missing_ok=True)
        code = errno.errorcode.get(exc.errno or 0, "error")
        raise WriteError(
            exc.errno,
            f"cannot write {path}: {exc.strerror or exc} ({code}); the previous file is kept",
        ) from None


def save_torch(payload: dict[str, Any], path: Path) -> Path:
    """`torch.save` into memory, then `write_atomic`. Keep payloads to tensors and plain values:
    they are read back with `weights_only=True`."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())
    return path
