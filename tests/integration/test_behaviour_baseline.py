"""Seeded runs end exactly as recorded: a refactor that changes no behaviour changes no number.

Re-record with `python -m tests.behaviour_baseline` only for a change meant to alter training.
"""

from __future__ import annotations

import json

import pytest

from tests.behaviour_baseline import CASES, RECORD, run_case

RECORDED = json.loads(RECORD.read_text())


SLOW = {"default", "heuristic_early", "random_seed3"}
"""Full-length or long runs: in the slow tier (make test-full, CI)."""


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=[pytest.mark.slow] if c in SLOW else []) for c in sorted(CASES)]
)
def test_seeded_run_matches_its_recorded_behaviour(case: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ESPER_KERNEL_STORE", str(tmp_path / "kernels"))
    got = run_case(case, tmp_path)
    want = RECORDED[case]
    assert got["adaptations"] == want["adaptations"]
    assert got["params"] == want["params"]
    assert got["metrics"] == want["metrics"]
    assert got == want
