"""A run's process start: `import esper.app` (what run.py, a sweep's job and a kernel-compile
worker import) against `import torch`, the floor, each in a fresh interpreter, interleaved.

The GNN policy's torch_geometric (which imports torch._dynamo) is imported only where a GNN
policy is built: it had cost every process about 1.8 s, twice the rest of Esper's imports.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

TARGET_RATIO = 1.6
"""esper.app's import / torch's; 2.4x when esper.app imported torch_geometric."""


def wall(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - start


def test_importing_esper_costs_little_beyond_torch(benchmark) -> None:
    ratios, esper_s, torch_s = [], [], []

    def one_round() -> None:
        pair = [("esper", "import esper.app"), ("torch", "import torch")]
        if len(ratios) % 2:
            pair.reverse()
        times = {name: wall(statement) for name, statement in pair}
        ratios.append(times["esper"] / times["torch"])
        esper_s.append(times["esper"])
        torch_s.append(times["torch"])

    benchmark.pedantic(one_round, rounds=8, iterations=1, warmup_rounds=1)
    ratio = statistics.median(ratios)
    benchmark.extra_info.update(
        ratio=ratio, esper_s=statistics.median(esper_s), torch_s=statistics.median(torch_s)
    )
    print(
        f"\nimport esper.app {statistics.median(esper_s):.2f} s, import torch "
        f"{statistics.median(torch_s):.2f} s: {ratio:.2f}x (target <= {TARGET_RATIO}x)"
    )
    assert ratio <= TARGET_RATIO
