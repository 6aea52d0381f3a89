"""Default `python run.py`, end to end in a fresh process with an empty kernel store.

DESIGN.md's target is <= 60 s wall on this 2-core CPU; this is the one absolute figure we keep,
because it is what a new user waits for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import run_cli

TARGET_S = 60.0


def test_default_run_wall_time(benchmark, tmp_path: Path) -> None:
    walls: list[float] = []

    def run_once() -> None:
        root = tmp_path / f"r{len(walls)}"
        start = time.perf_counter()
        result = run_cli(
            f"hydra.run.dir={root / 'run'}",
            cwd=tmp_path,
            env={"ESPER_KERNEL_STORE": str(root / "kernels")},
        )
        walls.append(time.perf_counter() - start)
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads((root / "run" / "summary.json").read_text())["status"] == "completed"

    benchmark.pedantic(run_once, rounds=2, iterations=1)
    benchmark.extra_info.update(wall_s=walls, target_s=TARGET_S)
    print(f"\ndefault run wall: {', '.join(f'{w:.1f}s' for w in walls)}")
    assert max(walls) <= TARGET_S
