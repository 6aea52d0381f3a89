"""Seeded runs end as recorded: a refactor that changes no behaviour changes no number.

Re-record with `python -m tests.behaviour_baseline` only for a change meant to alter training.

On a machine like the one that recorded the cases (same torch, same CPU instruction set and
flags) every number must match bit for bit. On another, torch's CPU kernels (oneDNN, MKL,
ATen's vectorised loops) take other code paths, float32 sums differ in their last bits and
SGD carries that on: measured, with every decision, size and kernel equal, `digits_cnn`'s
train loss 0.18666 on one machine and 0.18694 on another after 10 epochs, `default`'s test
loss 0.315 and 0.284 after 60, `random_seed3`'s test accuracy 0.86 and 0.835 after 40. There
the test still demands everything but the metrics exactly (decisions compared without their
reason texts), and the metrics to `ACCURACY_ABS` and `LOSS_REL`.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest

from tests.behaviour_baseline import CASES, MACHINE_KEY, RECORD, machine, run_case

RECORDED = json.loads(RECORD.read_text())
HERE = machine()

SLOW = {"default", "heuristic_early", "random_seed3"}
"""Full-length or long runs: in the slow tier (make test-full, CI)."""

ACCURACY_ABS = 0.05
"""On another machine: twice the largest accuracy drift measured (0.025, `random_seed3`)."""
LOSS_REL = 0.25
"""On another machine: losses within 25%, over twice the largest drift measured (10%)."""


def discrete(summary: dict[str, Any]) -> dict[str, Any]:
    """Everything a run did but its metrics, with adaptations stripped of their free-text
    reasons (which quote measured floats): what must match on any machine."""
    keys = ("epoch", "step", "slot", "blueprint", "from", "to")
    adaptations = [{k: a[k] for k in keys} for a in summary["adaptations"]]
    rest = {k: v for k, v in summary.items() if k not in ("metrics", "adaptations")}
    return {**rest, "adaptations": adaptations}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=[pytest.mark.slow] if c in SLOW else []) for c in sorted(CASES)]
)
def test_seeded_run_matches_its_recorded_behaviour(case: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ESPER_KERNEL_STORE", str(tmp_path / "kernels"))
    got = run_case(case, tmp_path)
    want = RECORDED[case]
    assert discrete(got)["adaptations"] == discrete(want)["adaptations"]
    assert got["params"] == want["params"]
    assert discrete(got) == discrete(want)
    if RECORDED.get(MACHINE_KEY) == HERE:
        assert got == want
        return
    warnings.warn(
        f"behaviour baseline recorded on {RECORDED.get(MACHINE_KEY)!r}, replayed on "
        f"{HERE!r}: metrics compared to a tolerance",
        stacklevel=1,
    )
    assert got["metrics"].keys() == want["metrics"].keys()
    for key, value in want["metrics"].items():
        if key.endswith("_loss"):
            assert got["metrics"][key] == pytest.approx(value, rel=LOSS_REL), key
        else:
            assert got["metrics"][key] == pytest.approx(value, abs=ACCURACY_ABS), key
