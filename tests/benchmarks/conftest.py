"""Benchmarks compare against a baseline measured in the same process, as ratios.

Run on demand: `make bench` (or `.venv/bin/python -m pytest tests/benchmarks`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def interleaved_ratio(
    candidate: Callable[[], object],
    baseline: Callable[[], object],
    rounds: int = 60,
    calls: int = 50,
) -> tuple[float, float, float]:
    """Median over rounds of candidate/baseline time, alternating order to cancel drift.

    Returns (ratio, candidate median us per call, baseline median us per call).
    """
    torch.set_num_threads(1)
    for fn in (candidate, baseline):
        for _ in range(calls):
            fn()
    ratios, cand, base = [], [], []
    for r in range(rounds):
        order = (candidate, baseline) if r % 2 == 0 else (baseline, candidate)
        times = {}
        for fn in order:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[fn] = (time.perf_counter() - start) / calls
        ratios.append(times[candidate] / times[baseline])
        cand.append(times[candidate] * 1e6)
        base.append(times[baseline] * 1e6)
    return statistics.median(ratios), statistics.median(cand), statistics.median(base)
