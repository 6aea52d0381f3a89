"""What the trainer checks of a policy, its own or a user's (`esper.policy.Policy`): that it
has the protocol's members, that its record and its state can be written, and that each
decision is legal when it is applied. A user's policy that broke one of these trained into a
traceback from deep inside the lifecycle, turned an illegal decision into a different one (an
`advance` of a dormant seed became a quality gate's refusal), lost the run's summary.json at
its end, or completed with checkpoints that no resume could load (helper-found). Now: one line
naming the policy, what it did and what is allowed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import torch
from pydantic_core import PydanticSerializationError, to_json

from esper.config import ConfigError, first_line
from esper.contracts import Decision, Observation, SeedState

S = SeedState

MEMBERS = ("name", "may_germinate", "decide", "state_dict", "load_state_dict", "describe")
"""What `Policy` asks of a policy."""

LEGAL_IN: dict[str, tuple[SeedState, ...]] = {
    "germinate": (S.DORMANT,),
    "advance": (S.GERMINATED, S.TRAINING),
    "fossilize": (S.BLENDING,),
    "cull": (S.GERMINATED, S.TRAINING, S.BLENDING),
}
"""The seed states each action applies to (an `advance` of a GERMINATED seed also needs its
kernel ready). The same rule masks a sampling policy's choices (`esper.policy.masks`)."""


class PolicyError(ValueError):
    """A policy broke its contract while the run trained: the run fails with this line."""


def legal(action: str, state: SeedState, kernel_ready: bool) -> bool:
    """Whether `action` applies to a seed in `state` now."""
    if action == "advance" and state is S.GERMINATED:
        return kernel_ready
    return state in LEGAL_IN.get(action, ())


def check_policy(policy: Any, target: str) -> None:
    """At build, before training: the protocol's members, a record JSON can hold, a state a
    checkpoint can hold. `target` names the policy in the messages (`policy._target_`)."""
    missing = [member for member in MEMBERS if not hasattr(policy, member)]
    if missing:
        raise ConfigError(
            f"policy: {target} has no {', '.join(missing)}; a policy has "
            f"{', '.join(MEMBERS)} (esper.policy.Policy)"
        )
    try:
        described = policy.describe()
    except Exception as exc:  # noqa: BLE001 - a user's method may raise anything
        raise ConfigError(f"policy: {target}.describe() failed: {first_line(exc)}") from exc
    if not isinstance(described, dict):
        raise ConfigError(
            f"policy: {target}.describe() returns a {type(described).__name__}; allowed: a "
            "dict of its settings (the run's record, summary.json, holds it)"
        )
    if not _json_holds(described):
        raise ConfigError(
            f"policy: {target}.describe() returns {_first_unwritable(described, json=True)}, "
            "which the run's record (summary.json) cannot hold; return plain values (str, int, "
            "float, bool, None, lists and dicts of them)"
        )
    try:
        checked_state(policy, who=f"policy: {target}")
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a user's method may raise anything
        raise ConfigError(f"policy: {target}.state_dict() failed: {first_line(exc)}") from exc


def checked_state(policy: Any, who: str | None = None) -> dict[str, Any]:
    """The policy's `state_dict()`, loaded back as a resume will load it (`weights_only`): a
    value it refuses fails the run now, where the run used to complete with checkpoints that
    no resume or `load_run` could read. `who` names the policy in the message."""
    state = policy.state_dict()
    if not _checkpoint_holds(state):
        raise PolicyError(
            f"{who or _name(policy)}: state_dict() holds {_first_unwritable(state, json=False)}, "
            "which a checkpoint cannot hold (it is loaded with weights_only=True); hold tensors "
            "and plain values (str, int, float, bool, None, lists, tuples and dicts of them)"
        )
    return state


def checked_decisions(policy: Any, decisions: Any, observation: Observation) -> list[Decision]:
    """What `decide()` returned, as the list of `Decision`s it must be, every slot it names
    one of the model's."""
    if not isinstance(decisions, list | tuple) or not all(
        isinstance(d, Decision) for d in decisions
    ):
        shown = type(decisions).__name__
        if isinstance(decisions, list | tuple):
            shown = f"a {shown} holding {_kinds(decisions)}"
        raise PolicyError(
            f"{_name(policy)}: decide() returned {shown}; allowed: a list of "
            "esper.contracts.Decision ([Decision(action='wait')] to do nothing)"
        )
    slots = [s.name for s in observation.slots]
    for decision in decisions:
        if decision.action != "wait" and decision.slot not in slots:
            raise PolicyError(
                f"{_name(policy)} decided {decision.action} on slot {decision.slot!r}; the "
                f"model's slots: {', '.join(slots)}"
            )
    return list(decisions)


def illegal(policy: Any, decision: Decision, state: SeedState, kernel_ready: bool) -> PolicyError:
    """The error for a decision the seed's state does not allow now."""
    needs = " or ".join(s.value for s in LEGAL_IN[decision.action])
    if decision.action == "advance" and state is S.GERMINATED:
        needs = "a kernel attached (wait until kernel_ready)"
    allowed = [a for a in LEGAL_IN if legal(a, state, kernel_ready)]
    return PolicyError(
        f"{_name(policy)} decided {decision.action} on slot {decision.slot!r}, which is "
        f"{state.value}: {decision.action} needs {needs}; allowed there now: "
        f"{', '.join(['wait', *allowed])}"
    )


def _name(policy: Any) -> str:
    return f"policy {getattr(policy, 'name', type(policy).__name__)!r}"


def _kinds(values: Any) -> str:
    return ", ".join(sorted({type(v).__name__ for v in values})) or "nothing"


def _first_unwritable(value: Any, json: bool) -> str:
    """The first value `_unwritable` finds, and where: what a message names."""
    path, what = next(_unwritable(value, json), ("", "a value"))
    return f"{what} at {path}" if path else what


def _unwritable(value: Any, json: bool, path: str = "") -> Iterator[tuple[str, str]]:
    """(where, what) for each value in `value`, a leaf inside dicts, lists and tuples, that
    the record's JSON (`json`) or a checkpoint cannot hold on its own: only on the way to an
    error, so each leaf is simply tried."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _unwritable(item, json, f"{path}[{key!r}]")
    elif type(value) in (list, tuple):
        for i, item in enumerate(value):
            yield from _unwritable(item, json, f"{path}[{i}]")
    elif not (_json_holds(value) if json else _checkpoint_holds(value)):
        kind = type(value)
        module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
        yield path, f"a {module}{kind.__qualname__}"


def _json_holds(value: Any) -> bool:
    try:
        to_json(value)
    except PydanticSerializationError:
        return False
    return True


def _checkpoint_holds(value: Any) -> bool:
    buffer = io.BytesIO()
    try:
        torch.save(value, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception:  # noqa: BLE001 - pickling and the unpickler raise many kinds
        return False
    return True
