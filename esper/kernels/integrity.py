"""The errors a kernel artifact can fail with, kept apart so that every checker can raise them;
and the one error of the compile machinery itself, which is nobody's artifact.

The artifact checks (`archive_members`, `program_rules`, `shape_expressions`) and the stores
all report through these; `safe_load` orchestrates the checks and imports them, so they cannot
live there without a cycle.
"""

from __future__ import annotations


class KernelIntegrityError(RuntimeError):
    """The stored object is not the kernel its id names, or not one we can load safely."""


class UnsafeArtifactError(KernelIntegrityError):
    """The artifact holds something a plain kernel never holds, or that would run code."""


class CompileMachineryError(RuntimeError):
    """The compile machinery failed (the worker pool broke, a worker died or cannot start) and
    recovering did not help. Unlike a blueprint that fails to export, this is no seed's fault:
    the run fails loudly instead of culling seeds and reporting a run that measured nothing."""


def refuse(reason: str) -> UnsafeArtifactError:
    """The refusal for `reason`: every check words it alike, so the library's log reads as
    one rule (nothing from a refused artifact ran)."""
    return UnsafeArtifactError(f"refused to load: {reason}; nothing in it was run")


def one_line(exc: BaseException) -> str:
    """The exception's first sentence: torch's messages run to paragraphs."""
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". ")[0][:160] if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
