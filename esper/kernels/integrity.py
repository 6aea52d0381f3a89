"""The errors a kernel artifact can fail with, kept apart so that every checker can raise them.

The artifact checks (`archive_members`, `program_rules`, `shape_expressions`) and the stores
all report through these; `safe_load` orchestrates the checks and imports them, so they cannot
live there without a cycle.
"""

from __future__ import annotations


class KernelIntegrityError(RuntimeError):
    """The stored object is not the kernel its id names, or not one we can load safely."""


class UnsafeArtifactError(KernelIntegrityError):
    """The artifact holds something a plain kernel never holds, or that would run code."""


def refuse(reason: str) -> UnsafeArtifactError:
    """The refusal for `reason`: every check words it alike, so the library's log reads as
    one rule (nothing from a refused artifact ran)."""
    return UnsafeArtifactError(f"refused to load: {reason}; nothing in it was run")


def one_line(exc: BaseException) -> str:
    """The exception's first sentence: torch's messages run to paragraphs."""
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". ")[0][:160] if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
