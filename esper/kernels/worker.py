"""The compile worker: a separate process, because torch.export flips process-wide switches
(it turns oneDNN off while it traces) that would change the numerics of training running beside
it in a thread. Builders are pure, so the worker builds the same module the trainer would.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from esper import blueprints
from esper.contracts import KernelSpec


def compile_payload(
    spec_json: str,
    latency_batches: Sequence[int],
    reference_batch: int,
    blueprint: blueprints.BlueprintSource,
) -> tuple[str, bytes]:
    """Runs in the worker: (metadata JSON, artifact bytes); the parent verifies and stores them."""
    from esper.kernels.compiler import compile_kernel

    spec = KernelSpec.model_validate_json(spec_json)
    blueprints.ensure(blueprint)
    compiled = compile_kernel(spec, latency_batches, reference_batch)
    return compiled.metadata.model_dump_json(), compiled.artifact


def warm_up() -> bool:
    """Import torch and the compiler and trace once (torch.export's first call in a process
    costs about a second), before the first request needs them."""
    import warnings

    import torch

    import esper.kernels.compiler  # noqa: F401

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(2, 2),))
    return True


def start_pool(workers: int) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(warm_up)
    return pool
