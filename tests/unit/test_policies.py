"""Policies on hand-made observations: what they decide and why."""

from __future__ import annotations

from esper.contracts import Observation, SeedState, SiteStats, SlotObservation
from esper.policy import HeuristicPolicy, NoPolicy, RandomPolicy

S = SeedState


def slot(name: str, state=S.DORMANT, grad: float = 1.0, **fields) -> SlotObservation:
    return SlotObservation(
        name=name,
        kind="vector",
        shape=(8,),
        state=state,
        stats=SiteStats(activation_mean=0, activation_std=1, grad_norm=grad),
        **fields,
    )


def obs(history: list[float], slots: list[SlotObservation]) -> Observation:
    return Observation(
        epoch=len(history) - 1,
        max_epochs=50,
        train_loss=history[-1],
        train_accuracy=0.5,
        val_loss=history[-1],
        val_accuracy=0.5,
        val_loss_history=tuple(history),
        slots=tuple(slots),
        allowed_blueprints={s.name: ("residual_mlp", "low_rank") for s in slots},
    )


IMPROVING = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
PLATEAU = [1.0, 0.9, 0.8, 0.7, 0.6, 0.6, 0.61, 0.6]


def test_heuristic_waits_while_val_improves_and_germinates_on_plateau() -> None:
    policy = HeuristicPolicy(patience=3, warmup_epochs=3)
    slots = [slot("a", grad=0.1), slot("b", grad=2.0)]
    assert [d.action for d in policy.decide(obs(IMPROVING, slots))] == ["wait"]
    (decision,) = policy.decide(obs(PLATEAU, slots))
    assert (decision.action, decision.slot, decision.blueprint) == (
        "germinate",
        "b",
        "residual_mlp",
    )
    assert "plateau" in decision.reason


def test_heuristic_prefers_a_blueprint_not_yet_tried_at_the_slot() -> None:
    policy = HeuristicPolicy(patience=3)
    (decision,) = policy.decide(obs(PLATEAU, [slot("a", tried={"residual_mlp": 1})]))
    assert decision.blueprint == "low_rank"


def test_heuristic_keeps_one_seed_in_flight_and_advances_it_on_schedule() -> None:
    policy = HeuristicPolicy(patience=3, training_epochs=2)
    germinated = slot("a", S.GERMINATED, kernel_ready=True)
    decisions = policy.decide(obs(PLATEAU, [germinated, slot("b")]))
    assert [(d.action, d.slot) for d in decisions] == [("advance", "a")]
    young = slot("a", S.TRAINING, epochs_in_state=1)
    assert [d.action for d in policy.decide(obs(PLATEAU, [young]))] == ["wait"]
    ripe = slot("a", S.TRAINING, epochs_in_state=2)
    assert [d.action for d in policy.decide(obs(PLATEAU, [ripe]))] == ["advance"]


def test_heuristic_fossilizes_helpful_seeds_and_culls_the_rest() -> None:
    policy = HeuristicPolicy(threshold=0.01)
    helpful = slot("a", S.BLENDING, alpha=1.0, contribution_accuracy=0.05)
    useless = slot("b", S.BLENDING, alpha=1.0, contribution_accuracy=0.005)
    still_blending = slot("c", S.BLENDING, alpha=0.5, contribution_accuracy=0.5)
    decisions = policy.decide(obs(IMPROVING, [helpful, useless, still_blending]))
    assert [(d.action, d.slot) for d in decisions] == [("fossilize", "a"), ("cull", "b")]
    assert "+0.0500 > 0.01" in decisions[0].reason


def test_a_seed_on_probation_is_not_judged_until_its_verdict_is_due() -> None:
    """`verdict_in` (seeds.probation_epochs) holds every rule-based keeper's verdict back."""
    on_probation = slot("a", S.BLENDING, alpha=1.0, verdict_in=2, contribution_accuracy=0.05)
    due = on_probation.model_copy(update={"verdict_in": 0})
    for policy in (HeuristicPolicy(), RandomPolicy(seed=0, germinate_probability=0.0)):
        assert [d.action for d in policy.decide(obs(IMPROVING, [on_probation]))] == ["wait"]
        (decision,) = policy.decide(obs(IMPROVING, [due]))
        assert (decision.action in ("fossilize", "cull"), decision.slot) == (True, "a")


def test_heuristic_can_judge_by_val_loss() -> None:
    policy = HeuristicPolicy(metric="val_loss")
    blended = slot("a", S.BLENDING, alpha=1.0, contribution_accuracy=0.2, contribution_loss=-0.1)
    assert policy.decide(obs(IMPROVING, [blended]))[0].action == "cull"


def test_random_policy_is_reproducible_from_its_seed() -> None:
    slots = [slot("a"), slot("b")]

    def run(seed: int) -> list[tuple]:
        policy = RandomPolicy(seed=seed, germinate_probability=0.5)
        return [
            tuple((d.action, d.slot, d.blueprint) for d in policy.decide(obs(IMPROVING, slots)))
            for _ in range(20)
        ]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert any(d[0][0] == "germinate" for d in run(1))


def test_none_policy_never_acts() -> None:
    decisions = NoPolicy().decide(obs(PLATEAU, [slot("a")]))
    assert [d.action for d in decisions] == ["wait"]
