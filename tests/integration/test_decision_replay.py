"""A run's events.jsonl replays as the decisions its policy took: each `decision_made` event
holds the observation the policy saw, and a fresh policy fed those observations decides the
same, so a learned policy can be trained or audited from recorded runs."""

from __future__ import annotations

import json

from esper.app import build
from esper.contracts import DecisionMade
from esper.policy import HeuristicPolicy

EARLY = ("policy.patience=1", "policy.warmup_epochs=2", "policy.min_delta=1.0")


def test_events_replay_as_the_decisions_the_policy_took(make_config, tmp_path) -> None:
    record = build(
        make_config(
            *EARLY,
            "trainer.max_epochs=12",
            "logger=none",
            "trainer.checkpoint=false",
            "kernels.async_compile=false",
            run_dir=tmp_path / "run",
        )
    ).run()
    lines = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    made = [
        DecisionMade.model_validate(event)
        for event in map(json.loads, lines)
        if event["kind"] == "decision_made"
    ]
    assert [m.epoch for m in made] == list(range(12)), "one decision event per control step"
    assert all(m.policy == "heuristic" for m in made)
    germinated = [a for a in record.adaptations if a.to_state.value == "GERMINATED"]
    assert len(germinated) == 2
    decided = [(m.epoch, d.slot) for m in made for d in m.decisions if d.action == "germinate"]
    assert decided == [(a.epoch, a.slot) for a in germinated]

    fresh = HeuristicPolicy(patience=1, warmup_epochs=2, min_delta=1.0)
    for m in made:
        assert fresh.decide(m.observation) == m.decisions, f"epoch {m.epoch}"
    blending = [s for m in made for s in m.observation.slots if s.state.value == "BLENDING"]
    assert blending and all(s.contribution_accuracy is not None for s in blending)
