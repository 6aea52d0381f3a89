"""What a process pays to start: torch_geometric (and torch._dynamo, which it imports) only
where a GNN policy is built (tests/benchmarks/test_start_up.py measures the difference)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = "import sys; {}; print(' '.join(m for m in ('torch_geometric', 'torch._dynamo') if m in sys.modules))"


@pytest.mark.parametrize(
    ("statement", "loaded"),
    [
        ("import esper.app, esper.simic, esper.report, esper.kernels", ""),
        ("import esper.policy; esper.policy.GnnPolicy", "torch_geometric torch._dynamo"),
        (  # run.py's check of every override, before Hydra: a run's schema alone
            "from esper.command_line import unknown_key; unknown_key(['trainer.max_epochs=1'], [])",
            "",
        ),
    ],
    ids=["a-run", "the-gnn-policy", "run-py-checks-its-overrides"],
)
def test_torch_geometric_is_imported_only_for_the_gnn_policy(statement, loaded) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(statement)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == loaded
