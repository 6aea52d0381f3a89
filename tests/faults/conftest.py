"""The fault-injection suite: every test here injects one fault (a signal, a corrupt file, a
full disk, a dying endpoint, a crafted artifact) and checks that it is survived: a clear
outcome, nothing lost, nothing run that should not run. The terminal summary counts them."""

from __future__ import annotations

import pytest

_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/faults/" not in report.nodeid:
        return
    if report.when == "call" or report.outcome != "passed":
        previous = _outcomes.get(report.nodeid)
        if previous in (None, "passed"):
            _outcomes[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's own type
    if not _outcomes:
        return
    survived = sum(outcome == "passed" for outcome in _outcomes.values())
    skipped = sum(outcome == "skipped" for outcome in _outcomes.values())
    injected = len(_outcomes) - skipped
    terminalreporter.write_line(
        f"fault injection: {injected} faults injected, {survived} survived"
        + (f", {skipped} skipped (see reasons above)" if skipped else "")
    )
