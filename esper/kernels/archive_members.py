"""The members of a PT2 archive, read as bytes and held to what `torch.export.save` writes for a
plain kernel.

torch unpickles some members (`use_pickle` weights and constants, opaque-object constants, and
the sample inputs, where it retries with `weights_only=False` when the weights-only loader
fails) and hands `data/aotinductor/` to a native-library loader. So only the known members are
admitted, weights and constants must be raw tensor payloads, and the sample inputs must pass
torch's weights-only unpickler here first, so that torch never reaches its fallback.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import torch

from esper.kernels.integrity import one_line, refuse
from esper.kernels.program_rules import walk

WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
MODEL = "models/model.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
REQUIRED = ("archive_format", MODEL, WEIGHTS_CONFIG, CONSTANTS_CONFIG, SAMPLE_INPUTS)
MEMBER = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
)


def read_members(artifact: bytes) -> dict[str, bytes]:
    """The archive's members by name, if it holds the known ones only and does not expand to
    far more than its own size."""
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(artifact))
        names = reader.get_all_records()
    except Exception as exc:  # noqa: BLE001 - any failure to parse means "not an archive"
        raise refuse(f"not a PT2 archive ({one_line(exc)})") from None
    unknown = sorted(n for n in names if not MEMBER.fullmatch(n))
    if unknown:
        raise refuse(f"member {unknown[0]!r} is not part of a plain torch.export kernel")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise refuse(f"member {missing[0]!r} is missing")
    total = sum(reader.get_record_size(n) for n in names)
    if total > 2 * len(artifact) + (1 << 20):
        raise refuse(f"members expand to {total} bytes from {len(artifact)}")
    return {n: reader.get_record(n) for n in names}


def json_member(members: dict[str, bytes], name: str) -> Any:
    """A member parsed as JSON, or a refusal saying it is not JSON."""
    try:
        return json.loads(members[name])
    except (ValueError, UnicodeDecodeError) as exc:
        raise refuse(f"{name} is not JSON ({one_line(exc)})") from None


def check_payloads(members: dict[str, bytes], name: str, prefix: str) -> None:
    """Weights and constants must be raw tensor bytes: never pickled, never objects."""
    document = json_member(members, name)
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise refuse(f"{name} has no config")
    walk(document, name)
    folder = name.rsplit("/", 1)[0]
    for fqn, meta in config.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise refuse(f"{name}: {fqn!r} is pickled; a kernel stores raw tensors only")
        path = meta.get("path_name")
        if not (isinstance(path, str) and re.fullmatch(prefix + r"\d+", path)):
            raise refuse(f"{name}: {fqn!r} is stored as {str(path)[:80]!r}, not a raw tensor")
        if f"{folder}/{path}" not in members or not isinstance(meta.get("tensor_meta"), dict):
            raise refuse(f"{name}: the tensor {fqn!r} is missing")


def check_sample_inputs(data: bytes) -> None:
    """torch loads these weights-only and, should that fail, unpickles them fully: so fail
    here first, with the same loader, and torch never gets to its fallback."""
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means torch would fall back
        raise refuse(
            f"{SAMPLE_INPUTS} needs more than torch's weights-only unpickler ({one_line(exc)})"
        ) from None
