"""Kernel artifacts come from stores that other people write: read them as data, never as code.

`torch.export.load` trusts its input. For torch 2.13 we found it runs code from an archive in
four ways: it unpickles members (`use_pickle` weights and constants, opaque-object constants,
and the sample inputs, where it retries with `weights_only=False` when the weights-only loader
fails); it hands `data/aotinductor/` to a native-library loader; it evaluates symbolic-shape
strings with `sympy.sympify` (Python `eval`); and `.module()` pastes strings from the archive
(guards, argument and attribute names) into the Python source it generates and executes.

So before torch sees an artifact, `check_artifact` holds it to what `torch.export.save` writes
for a plain kernel: known members only; raw tensor payloads; JSON whose names are plain
identifiers, whose shape expressions use only sympy's arithmetic, whose graph calls only aten
operators (none that touch files), with no guard code; and sample inputs that torch's
weights-only unpickler accepts (so torch never falls back). `load_program` then loads with the
archive loader directly, which has no legacy fallback. Anything else is refused, with the
reason, as an `UnsafeArtifactError`; the library quarantines the object and compiles again.

This module is the entry point and the order of the checks; the rules live beside it:
`archive_members` (which members, raw payloads, sample inputs), `program_rules` (names,
operators and text in the serialised program, and the loaded graph), `shape_expressions`
(what sympy may evaluate) and `integrity` (the errors).
"""

from __future__ import annotations

import io
import warnings

from torch.export import ExportedProgram

from esper.kernels.archive_members import (
    CONSTANTS_CONFIG,
    MODEL,
    SAMPLE_INPUTS,
    WEIGHTS_CONFIG,
    check_payloads,
    check_sample_inputs,
    json_member,
    read_members,
)
from esper.kernels.integrity import KernelIntegrityError, UnsafeArtifactError, one_line, refuse
from esper.kernels.program_rules import check_graph, walk

__all__ = ["KernelIntegrityError", "UnsafeArtifactError", "check_artifact", "load_program"]


def check_artifact(artifact: bytes) -> None:
    """Raise UnsafeArtifactError unless the artifact is data that torch can load safely."""
    members = read_members(artifact)
    if members["archive_format"] != b"pt2":
        raise refuse("archive_format is not pt2")
    check_payloads(members, WEIGHTS_CONFIG, "weight_")
    check_payloads(members, CONSTANTS_CONFIG, "tensor_")
    walk(json_member(members, MODEL), MODEL)
    check_sample_inputs(members[SAMPLE_INPUTS])


def load_program(artifact: bytes) -> ExportedProgram:
    """Check the artifact, then load it with the archive loader alone (no legacy fallback)."""
    try:
        check_artifact(artifact)
    except UnsafeArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. JSON nested past the recursion limit
        raise refuse(f"it cannot be checked ({one_line(exc)})") from None
    from torch.export.pt2_archive._package import load_pt2

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = load_pt2(io.BytesIO(artifact)).exported_programs["model"]
    except Exception as exc:  # noqa: BLE001 - whatever torch says, the object is unusable
        raise refuse(f"torch could not load it ({one_line(exc)})") from None
    check_graph(program)
    return program
