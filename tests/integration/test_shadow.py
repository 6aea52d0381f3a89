"""seeds.contribution=shadow: a blending seed judged against the model trained on without it,
through a real trainer built from config (esper.training.shadow)."""

from __future__ import annotations

import pytest
import torch

from esper.app import build
from esper.config import ConfigError
from esper.contracts import Decision
from esper.training.steps import evaluate
from tests.integration.test_gates import events, trainer_with_seed

SHORT = ("trainer.max_epochs=12", "trainer.checkpoint=false", "logger=none")
EARLY_HEURISTIC = (
    *SHORT,
    "policy=heuristic",
    "policy.patience=1",
    "policy.warmup_epochs=2",
    "policy.min_delta=1.0",
)
"""Germinates at epoch 1 and again after each cull's embargo: seeds reach their verdict."""


def host_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if ".seed." not in k}


def test_a_run_whose_seeds_are_all_culled_ends_exactly_as_the_host_alone(
    make_config, tmp_path
) -> None:
    """Every culled seed's model is restored from its shadow, so a run that keeps nothing is,
    to the bit, the run that never grew; the shadows' training is counted in its FLOPs."""
    culled = build(
        make_config(
            *EARLY_HEURISTIC,
            "policy.threshold=1.0",  # no seed can add a whole accuracy point: all are culled
            "seeds.contribution=shadow",
            run_dir=tmp_path / "culled",
        )
    ).run()
    alone = build(make_config(*SHORT, "policy=none", run_dir=tmp_path / "alone")).run()
    culls = [a for a in culled.adaptations if a.to_state.value == "CULLED"]
    assert culls and all("model restored from its shadow" in a.reason for a in culls)
    assert all(a.from_state.value == "BLENDING" for a in culls)
    assert culled.metrics == alone.metrics
    assert culled.train_flops > alone.train_flops  # the seeds and their shadows cost compute


def test_the_contribution_is_the_grown_model_against_its_shadow(make_config, tmp_path) -> None:
    experiment, trainer, slot = trainer_with_seed(
        make_config, tmp_path, "seeds.contribution=shadow", "seeds.gates.min_training_steps=0"
    )
    trainer.train_epoch()
    before = host_state(trainer.model)
    trainer.control.apply(Decision(action="advance", slot="blocks.0"))
    assert slot.state.value == "BLENDING"
    shadows = trainer.shadows
    assert shadows is not None and "blocks.0" in shadows
    shadow = shadows.model_of("blocks.0")
    assert shadow.slot("blocks.0").bypass and not slot.bypass
    assert all(torch.equal(before[k], v) for k, v in host_state(shadow).items())
    assert "seed:blocks.0" not in [
        g.get("name") for g in shadows.shadows["blocks.0"].optimizer.param_groups
    ]

    train = trainer.train_epoch()
    grown = host_state(trainer.model)
    counterfactual = host_state(shadow)
    assert any(not torch.equal(grown[k], counterfactual[k]) for k in grown), "both trained apart"
    assert any(not torch.equal(before[k], counterfactual[k]) for k in grown), "the shadow trained"
    val = evaluate(trainer.model, trainer.data.val, trainer.device)
    without = evaluate(shadow, trainer.data.val, trainer.device)
    observation = trainer.control.observer.observe(1, train, val, [val.loss])
    (seen,) = [s for s in observation.slots if s.name == "blocks.0"]
    assert seen.contribution_accuracy == val.accuracy - without.accuracy
    assert seen.contribution_loss == without.loss - val.loss

    shadow_optimizer = shadows.shadows["blocks.0"].optimizer
    trainer.control.apply(Decision(action="cull", slot="blocks.0", reason="test"))
    assert "blocks.0" not in shadows
    restored = host_state(trainer.model)
    assert all(torch.equal(restored[k], counterfactual[k]) for k in restored)
    shadow_params = dict(shadow.named_parameters())
    for name, param in trainer.model.named_parameters():  # the optimizer's state too
        mine = trainer.optimizer.state[param]
        theirs = shadow_optimizer.state[shadow_params[name]]
        assert mine.keys() == theirs.keys() and mine, name
        assert all(torch.equal(torch.as_tensor(mine[k]), torch.as_tensor(theirs[k])) for k in mine)
    (cull,) = [e for e in events(experiment, "adaptation") if e["to"] == "CULLED"]
    assert cull["reason"] == "test; model restored from its shadow"


def test_a_kept_seed_drops_its_shadow_and_keeps_the_grown_model(make_config, tmp_path) -> None:
    experiment, trainer, slot = trainer_with_seed(
        make_config,
        tmp_path,
        "seeds.contribution=shadow",
        "seeds.gates.min_training_steps=0",
        "seeds.gates.fossilize_min_contribution=null",
    )
    trainer.train_epoch()
    trainer.control.apply(Decision(action="advance", slot="blocks.0"))
    trainer.train_epoch()
    grown = host_state(trainer.model)
    trainer.control.apply(Decision(action="fossilize", slot="blocks.0", reason="test"))
    assert slot.state.value == "FOSSILIZED" and "blocks.0" not in trainer.shadows
    assert all(torch.equal(grown[k], v) for k, v in host_state(trainer.model).items())


@pytest.mark.parametrize(
    ("probation", "stop_after"),
    [(0, 1), (2, 4)],  # mid-ramp; mid-probation (the ramp is 3 epochs)
    ids=["mid-blend", "mid-probation"],
)
def test_a_resume_mid_blend_ends_like_the_uninterrupted_run(
    make_config, tmp_path, probation, stop_after
) -> None:
    """The shadow is part of the checkpoint: resumed, the verdict and every number match."""
    overrides = (
        *EARLY_HEURISTIC,
        "seeds.contribution=shadow",
        f"seeds.probation_epochs={probation}",
        "trainer.checkpoint=true",
    )
    full = build(make_config(*overrides, run_dir=tmp_path / "full")).run()
    blending = [a.epoch for a in full.adaptations if a.to_state.value == "BLENDING"]
    assert blending, "the schedule blends a seed within the run"
    first = build(
        make_config(
            *overrides,
            f"trainer.stop_after_epoch={blending[0] + stop_after}",
            run_dir=tmp_path / "a",
        )
    ).run()
    assert first.status == "stopped"
    resumed = build(
        make_config(*overrides, f"trainer.resume={tmp_path / 'a'}", run_dir=tmp_path / "b")
    ).run()
    assert resumed.metrics == full.metrics
    assert resumed.train_flops == full.train_flops
    assert [a.model_dump() for a in resumed.adaptations] == [
        a.model_dump() for a in full.adaptations
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["seeds.contribution=sideways"],
            r"seeds\.contribution='sideways': Input should be 'bypass' or 'shadow'",
        ),
        (
            ["seeds.contribution=shadow", "trainer.strategy=ddp"],
            r"seeds\.contribution=shadow: single-process runs only .* use seeds\.contribution=bypass",
        ),
        (
            ["seeds.probation_epochs=-1"],
            r"seeds\.probation_epochs=-1: Input should be greater than or equal to 0",
        ),
    ],
)
def test_a_bad_contribution_setting_is_named_before_training(
    make_config, overrides, message
) -> None:
    with pytest.raises(ConfigError, match=message):
        build(make_config("logger=none", *overrides))


@pytest.mark.parametrize("probation", [0, 2])
def test_a_verdict_is_due_after_the_ramp_and_the_probation(
    make_config, tmp_path, probation
) -> None:
    """Every verdict comes `blend_epochs + probation_epochs` control steps after blending began,
    and the observation counts the epochs down to it."""
    experiment = build(
        make_config(
            *EARLY_HEURISTIC,
            "trainer.max_epochs=14",
            "seeds.contribution=shadow",
            f"seeds.probation_epochs={probation}",
            run_dir=tmp_path,
        )
    )
    result = experiment.run()
    began: dict[str, int] = {}
    waited = []
    for a in result.adaptations:
        if a.to_state.value == "BLENDING":
            began[a.slot] = a.epoch
        elif a.from_state.value == "BLENDING":
            waited.append(a.epoch - began.pop(a.slot))
    assert waited and all(w == 3 + probation for w in waited)  # conf/seeds: blend_epochs 3
    countdown = [
        s["verdict_in"]
        for e in events(experiment, "decision_made")
        for s in e["observation"]["slots"]
        if s["state"] == "BLENDING"
    ]
    assert countdown[: 3 + probation] == list(range(2 + probation, -1, -1))
