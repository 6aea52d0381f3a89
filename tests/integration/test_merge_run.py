from __future__ import annotations

import pytest

from esper.app import build
from tests.conftest import KEEP_IT, ONE_EARLY_SEED


@pytest.mark.parametrize(
    ("sites", "expect"),
    [
        ("[blocks.0.0]", "merged into blocks.0.0"),
        ("[blocks.0]", "not merged (site blocks.0 is a Sequential, not a Linear)"),
    ],
)
def test_fossilized_merge_mode(make_config, tmp_path, sites: str, expect: str) -> None:
    cfg = make_config(
        *ONE_EARLY_SEED,
        *KEEP_IT,
        "seeds.gates.fossilize_min_contribution=null",
        "seeds.fossilized=merge",
        "blueprints.allowed=[low_rank]",
        f"model.sites={sites}",
        run_dir=tmp_path / "run",
    )
    summary = build(cfg).run().model_dump(mode="json")
    fossilized = [a for a in summary["adaptations"] if a["to"] == "FOSSILIZED"]
    assert len(fossilized) == 1 and expect in fossilized[0]["reason"]
    merged = expect.startswith("merged")
    assert (summary["params"]["seeds"] == 0) == merged
