"""The GPU check (`make gpu-check`): the CUDA paths a CPU machine cannot run, each test marked
`gpu` and skipped with the reason where there is no CUDA. Every figure a test measures goes
into one JSON file, `$ESPER_GPU_FIGURES` (default `gpu_check.json`), written at the end.

`ESPER_GPU_CHECK_DEVICE=cpu` runs the same script on the CPU (gloo instead of NCCL): a dry run
of its plumbing, so that the one GPU session a task may get is not spent on a typo."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import pytest
import torch

FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="session")
def device() -> torch.device:
    wanted = os.environ.get("ESPER_GPU_CHECK_DEVICE", "cuda")
    if wanted == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device here: the GPU check runs on a machine with one")
    return torch.device(wanted)


@pytest.fixture(scope="session")
def figures() -> dict[str, Any]:
    return FIGURES


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not FIGURES:
        return
    device = os.environ.get("ESPER_GPU_CHECK_DEVICE", "cuda")
    FIGURES["machine"] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    out = Path(os.environ.get("ESPER_GPU_FIGURES", "gpu_check.json"))
    out.write_text(json.dumps(FIGURES, indent=2, sort_keys=True))
    print(f"\nGPU check figures: {out}")
