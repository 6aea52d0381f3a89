"""Files written whole or not at all: summary.json, checkpoints, policy weights; and torch
files read back as data only.

Write next to the target, flush to disk, rename: a reader (or a crash) sees the old file or the
new one, never a part. A failed write removes its temporary file and names the cause (ENOSPC,
EACCES, ...), keeping the previous file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pickle
import stat
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch


class WriteError(OSError):
    """A file could not be written; the previous one is still in place."""


class ReadError(ValueError):
    """A torch file that could not be read as data: why, in words a user can act on."""


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
        kept = "the previous file is kept" if path.is_file() else "there is no earlier one"
        raise cannot_write(path, exc, kept) from None


def cannot_write(path: Path, exc: OSError, then: str) -> WriteError:
    """`cannot write PATH: why (ERRNO); then`: the file, the cause and what is left."""
    return WriteError(
        exc.errno, f"cannot write {path}: {exc.strerror or exc} ({_code(exc)}); {then}"
    )


def _code(exc: OSError) -> str:
    """The errno's name (ENOSPC, EACCES): what a user searches for."""
    return errno.errorcode.get(exc.errno or 0, "error")


def save_torch(payload: dict[str, Any], path: Path) -> Path:
    """`torch.save` into memory, then `write_atomic`. Keep payloads to tensors and plain values:
    they are read back with `weights_only=True`."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())
    return path


def load_torch(path: Path) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain values only, so a crafted file runs
    no code. ReadError says why a file was refused; torch's own first line misleads (random
    bytes read "Weights only load failed. In PyTorch 2.6, we changed the default ...", a text
    file "101", a truncated one "Invalid argument")."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:  # missing, a path through a file, a symlink loop
        raise ReadError(_said(exc)) from None
    if not stat.S_ISREG(mode):  # a FIFO would block the reader for ever
        raise ReadError("a directory" if stat.S_ISDIR(mode) else "not a regular file")
    damaged = _damaged_member(path)
    if damaged:  # torch does not check its archive's checksums: flipped bytes load as data
        raise ReadError(f"a damaged torch file: {damaged}")
    try:
        with warnings.catch_warnings():  # torch warns of a foreign pickle it then refuses
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises anything for a file not its own
        raise ReadError(_unreadable(path, exc)) from None


def _damaged_member(path: Path) -> str | None:
    """Why torch.save's zip archive at `path` is damaged (a member failing its CRC), or None
    for one that is whole, or that is no zip archive (torch.load says what it is then)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        return None
    except (OSError, ValueError, EOFError, RuntimeError, zlib.error) as exc:  # a broken member
        return f"a member cannot be read ({type(exc).__name__})"
    return f"{bad} fails its checksum" if bad else None


def _said(exc: OSError) -> str:
    return f"{exc.strerror or exc}, {_code(exc)}"


def _unreadable(path: Path, exc: Exception) -> str:
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as error:
        return _said(error)
    if not head:
        return "the file is empty"
    if head.startswith(b"\x80"):  # a pickle: torch.save's legacy format, or not torch's
        return (
            "a pickle that torch's safe loader refuses (not torch.save's archive); refused "
            "unread, since loading it could run code"
        )
    if not head.startswith(b"PK"):
        return f"not a file torch.save wrote: it begins {head!r}"
    if not zipfile.is_zipfile(path):
        return "a truncated torch file: the zip archive torch.save writes is cut short"
    if isinstance(exc, pickle.UnpicklingError):
        return (
            "it holds objects other than tensors and plain values; refused unread, since "
            "loading them could run code"
        )
    text = str(exc).strip()
    return f"a damaged torch file: {text.splitlines()[0] if text else type(exc).__name__}"
