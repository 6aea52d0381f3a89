from __future__ import annotations

import pytest

from esper.app import build


@pytest.mark.parametrize(
    ("sites", "expect"),
    [
        ("[blocks.0.0]", "merged into blocks.0.0"),
        ("[blocks.0]", "not merged (site blocks.0 is a Sequential, not a Linear)"),
    ],
)
def test_fossilized_merge_mode(make_config, tmp_path, sites: str, expect: str) -> None:
    cfg = make_config(
        "logger=none",
        "trainer.checkpoint=false",
        "policy=random",
        "policy.germinate_probability=1.0",
        "policy.fossilize_probability=1.0",
        "policy.max_seeds=1",
        "trainer.max_epochs=12",
        "seeds.gates.min_training_steps=0",
        "seeds.gates.fossilize_min_contribution=null",
        "seeds.fossilized=merge",
        "blueprints.allowed=[low_rank]",
        f"model.sites={sites}",
        run_dir=tmp_path / "run",
    )
    summary = build(cfg).run()
    fossilized = [a for a in summary["adaptations"] if a["to"] == "FOSSILIZED"]
    assert len(fossilized) == 1 and expect in fossilized[0]["reason"]
    merged = expect.startswith("merged")
    assert (summary["params"]["seeds"] == 0) == merged
