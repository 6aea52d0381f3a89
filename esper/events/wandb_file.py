"""Read a W&B offline run file (`run-*.wandb`) without a server.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version), then 32 KiB
blocks of chunks, each with crc32, length and type (full, first, middle, last), whose joined
payloads are protobuf `Record`s. Tests read runs back with this, and so can a researcher.
"""

from __future__ import annotations

import glob
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class RunFileError(ValueError):
    pass


def read_payloads(path: str | Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise RunFileError(f"{path}: not a W&B run file (header {data[:7]!r})")
    pos, pending = len(HEADER), b""
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:
            pos += left_in_block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if kind == 0 and length == 0:
            pos += left_in_block
            continue
        body = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        if zlib.crc32(bytes([kind]) + body) & 0xFFFFFFFF != checksum:
            raise RunFileError(f"{path}: bad checksum at byte {pos}")
        pos += CHUNK_HEADER + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            yield pending + body
            pending = b""


def _items(items: Any) -> dict[str, Any]:
    out = {}
    for item in items:
        key = "/".join(item.nested_key) if item.nested_key else item.key
        out[key] = json.loads(item.value_json) if item.value_json else None
    return out


@dataclass
class RunFile:
    path: Path
    run_id: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None

    @property
    def empty(self) -> bool:
        """No record at all: the file's header alone."""
        parts = (self.run_id, self.config, self.history, self.summary)
        return not any(parts) and self.exit_code is None

    def table(self, key: str) -> dict[str, Any]:
        """The JSON of a table logged under `key` (its columns and rows), from the run's files."""
        prefix = f"{key}/"
        for row in reversed(self.history):
            ref = row.get(key) or {
                k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)
            }
            if isinstance(ref, dict) and ref.get("_type") == "table-file":
                files = self.path.parent / "files"
                return json.loads((files / ref["path"]).read_text())
        raise KeyError(f"no table {key!r} in {self.path}")


def read_run(path: str | Path, run_id: str | None = None) -> RunFile:
    """Parse a run file, or the run under a W&B directory.

    A resumed run leaves one file per segment (one per process that logged to it), all with
    the same run id; they are read in order and merged into one run, as `wandb sync` would.
    A segment that holds no record at all is left out: a process killed before W&B wrote its
    first 32 KiB block leaves the file's header alone (its epochs are logged again by the
    resume, from events.jsonl). With `run_id`, only that run's segments are read: a
    directory may also hold an attempt that was killed before its first checkpoint and then
    started over (helper-found: a Simic resume read no update as logged there, and logged
    them all again).
    """
    path = Path(path)
    if not path.is_dir():
        return _read_file(path)
    found = sorted(
        {Path(f).resolve() for f in glob.glob(str(path / "**" / "run-*.wandb"), recursive=True)},
        key=lambda p: p.parent.name,  # offline-run-<date>_<time>-<id>: chronological
    )
    if not found:
        raise RunFileError(f"{path}: no run-*.wandb file")
    segments = [segment for segment in map(_read_file, found) if not segment.empty]
    if run_id is not None:
        segments = [segment for segment in segments if segment.run_id == run_id]
        if not segments:
            raise RunFileError(f"{path}: no W&B record of run {run_id}")
    if not segments:
        raise RunFileError(f"{path}: no W&B record in {len(found)} run file(s) (header only)")
    ids = sorted({s.run_id for s in segments})
    if len(ids) != 1:
        raise RunFileError(f"{path}: expected one W&B run, found {len(ids)}: {', '.join(ids)}")
    run = segments[-1]
    merged = RunFile(run.path, run.run_id, run.group, run.job_type, list(run.tags))
    for segment in segments:
        merged.config.update(segment.config)
        merged.history.extend(segment.history)
        merged.summary.update(segment.summary)
        merged.exit_code = segment.exit_code
    return merged


def _read_file(path: Path) -> RunFile:
    from wandb.proto import wandb_internal_pb2 as pb

    run = RunFile(path)
    for payload in read_payloads(path):
        record = pb.Record()  # type: ignore[attr-defined]  # generated protobuf, no stubs
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            run.group = record.run.run_group
            run.job_type = record.run.job_type
            run.tags = list(record.run.tags)
            run.config.update(_items(record.run.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run
