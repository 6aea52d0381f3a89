"""Tamiyo: a policy that reads the model as a graph and decides with a small GNN.

Each control step it samples one decision, operation first, then the slot, then (to
germinate) the blueprint, each from logits masked to what is legal now, so it never emits an
illegal decision. Sampling draws from the policy's own seeded generator: a run is reproducible
and the training run's random streams are left alone. `greedy=true` takes the most likely
choice instead (evaluation).

`checkpoint=null` runs the initial (untrained) weights, seeded by `seed`, and says so in the
run's outputs; `checkpoint=PATH` loads trained weights (esper.simic writes them).

`lifecycle` says what the network decides. `learned`: every operation (germinate, advance,
fossilize, cull). `schedule`: only when, where and with which blueprint to germinate; a seed
then advances on the heuristic's schedule (`training_epochs` incubating, blended fully) and is
kept only if its measured val-accuracy contribution exceeds `threshold`. Why: episodes
sampled under `learned` spent their decisions culling seeds a step after germinating them or
fossilizing them half blended, so a reward at the episode's end rarely reached the choice
that mattered (which blueprint, when). A checkpoint records the lifecycle it was trained
under and runs under it (`lifecycle: null`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from esper.atomic import ReadError, load_torch, save_torch
from esper.config import MAX_SEED
from esper.contracts import Decision, Observation
from esper.models.checks import integer, number
from esper.policy.base import keep_if_it_helps, lifecycle_decisions
from esper.policy.gnn_net import PolicyNet, blueprint_features
from esper.policy.masks import OPERATIONS, ActionMasks, action_masks, germination_only
from esper.policy.scatter import BackendChoice, Setting
from esper.policy.scatter_choice import ScatterBackends, check_setting

log = logging.getLogger(__name__)
Lifecycle = Literal["learned", "schedule"]
LIFECYCLES: tuple[str, ...] = get_args(Lifecycle)
FORMAT = "esper-gnn-policy/1"
SHIPPED = {
    "shipped": Path(__file__).parent / "checkpoints" / "gnn.pt",
    "shipped_growth": Path(__file__).parent / "checkpoints" / "gnn_growth.pt",
}
"""The checkpoints trained by `python run.py --config-name train_policy` that ship with Esper
(experiments/gnn_policy.md records how), by the name `policy.checkpoint` takes:
- `shipped` (`policy=gnn`): chosen on validation to beat random growth with fewer parameters;
  it grows little.
- `shipped_growth` (`policy=gnn_growth`): trained at a lower parameter price and chosen on
  validation for accuracy at that price; it grows more, and more accurately."""


@dataclass
class Step:
    """What the policy did at one control step: enough to replay it under new weights."""

    epoch: int
    x: Tensor
    edge_index: Tensor
    u: Tensor
    slot_index: Tensor
    blueprints: Tensor
    masks: ActionMasks
    operation: int
    slot: int
    blueprint: int
    log_prob: float
    value: float


@dataclass(frozen=True)
class Inputs:
    """The network's inputs at one control step: the graph (`x`, `edge_index`, `u`,
    `slot_index`), the legal choices, and the blueprint library's features."""

    x: Tensor
    edge_index: Tensor
    u: Tensor
    slot_index: Tensor
    masks: ActionMasks
    library: Tensor


def masked(logits: Tensor, mask: Tensor) -> Tensor:
    return logits.masked_fill(~mask, float("-inf"))


def misfits(weights: dict[Any, Any], expected: dict[str, Tensor], shown: int = 3) -> list[str]:
    """How checkpoint weights differ from the network's own (names, types, shapes), the first
    `shown` of each kind: one line that says whether the file is of another architecture."""

    def first(names: list[str], sep: str = ", ") -> str:
        more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
        return sep.join(names[:shown]) + more

    missing = sorted(k for k in expected if k not in weights)
    unexpected = sorted(str(k) for k in weights if k not in expected)
    common = [k for k in expected if k in weights]
    untyped = [
        f"{k} is a {type(weights[k]).__name__}, not a tensor"
        for k in common
        if not isinstance(weights[k], Tensor)
    ]
    shapes = [
        f"shape {k} {tuple(weights[k].shape)}, expected {tuple(expected[k].shape)}"
        for k in common
        if isinstance(weights[k], Tensor) and weights[k].shape != expected[k].shape
    ]
    problems = [f"missing {first(missing)}"] if missing else []
    problems += [f"unexpected {first(unexpected)}"] if unexpected else []
    return problems + [first(found, "; ") for found in (untyped, shapes) if found]


class GnnPolicy:
    may_germinate = True
    name = "gnn"

    def __init__(
        self,
        seed: int = 0,
        checkpoint: str | None = None,
        hidden: int = 32,
        layers: int = 2,
        greedy: bool = False,
        max_in_flight: int = 1,
        max_seeds: int | None = None,
        scatter_backend: Setting = "auto",
        lifecycle: Lifecycle | None = None,
        training_epochs: int = 3,
        threshold: float = 0.0,
    ) -> None:
        for key, value in (
            ("hidden", hidden),
            ("layers", layers),
            ("max_in_flight", max_in_flight),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"policy.{key}={value!r} must be an integer >= 1")
        if max_seeds is not None and (not isinstance(max_seeds, int) or max_seeds < 0):
            raise ValueError(f"policy.max_seeds={max_seeds!r} must be null or an integer >= 0")
        if lifecycle is not None and lifecycle not in LIFECYCLES:
            raise ValueError(
                f"policy.lifecycle={lifecycle!r}; allowed: {', '.join(LIFECYCLES)}, or null "
                "(the checkpoint's own)"
            )
        self.training_epochs = integer("policy.training_epochs", training_epochs, 1)
        self.threshold = number("policy.threshold", threshold)
        self.requested: Lifecycle | None = lifecycle
        self.lifecycle: Lifecycle = lifecycle or "learned"
        """What the network decides (module docstring): set by the checkpoint when loaded."""
        self.seed = integer("policy.seed", seed, 0)  # helper-found: 'abc' or 1.5 from torch
        if self.seed > MAX_SEED:  # helper-found: torch's "Overflow when unpacking long long"
            raise ValueError(f"policy.seed={seed!r} must be at most {MAX_SEED}, as seed is")
        if not isinstance(greedy, bool):  # helper-found: the string 'false' took argmax
            raise ValueError(f"policy.greedy={greedy!r} must be true or false")
        self.greedy = greedy
        self.max_in_flight = max_in_flight
        self.max_seeds = max_seeds
        check_setting(scatter_backend)
        self.setting = scatter_backend
        self.backends = ScatterBackends()
        # scratch parts until the first decision chooses for the real graph
        fixed = self.backends.choose("torch", torch.device("cpu"), 1, hidden, announce=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = PolicyNet(hidden, layers, fixed)
        if checkpoint == "":  # helper-found: said "a directory" (the empty path is ".")
            raise ValueError(
                f"policy.checkpoint='' is empty; allowed: a path to a .pt file, "
                f"{', '.join(SHIPPED)}, or null (initial weights)"
            )
        if checkpoint is not None and not isinstance(checkpoint, str):
            # Hydra parses `policy.checkpoint=123` as an int: say what it takes, not what failed
            raise ValueError(
                f"policy.checkpoint={checkpoint!r}: expected a path to a .pt file, "
                f"{', '.join(SHIPPED)}, or null (initial weights)"
            )
        if checkpoint in SHIPPED:
            checkpoint = str(SHIPPED[checkpoint])
        self.checkpoint = checkpoint
        self.trained: dict[str, Any] | None = None
        if checkpoint is not None:
            self.trained = self.load_weights(checkpoint)
        self.net.eval()
        self.generator = torch.Generator().manual_seed(seed)
        self.germinated = 0
        self.choice: BackendChoice | None = None
        self.trace: list[Step] | None = None
        """Set to a list to record every decision as a Step (policy learning does)."""
        self._blueprints: tuple[tuple[str, ...], Tensor] | None = None

    # -- weights ---------------------------------------------------------------------------
    def load_weights(self, path: str) -> dict[str, Any]:
        """Trained weights from a policy checkpoint (tensors and plain values only)."""
        file = Path(path).expanduser()
        key = f"policy.checkpoint={path!r}"
        if not file.is_file():
            what = (
                "a directory"
                if file.is_dir()
                else "no such file"
                if not file.exists()
                else "not a file"
            )
            raise ValueError(f"{key}: {what}; allowed: a .pt file, or one of {', '.join(SHIPPED)}")
        try:
            state = load_torch(file)
        except ReadError as exc:
            raise ValueError(f"{key}: not a GNN policy checkpoint ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{key}: not a GNN policy checkpoint (no {FORMAT} header)")
        if state.get("architecture") != self.net.architecture():
            raise ValueError(
                f"{key}: trained for {state.get('architecture')}, this policy is "
                f"{self.net.architecture()} (set policy.hidden / policy.layers to match)"
            )
        trained_for = state.get("lifecycle", "learned")
        if trained_for not in LIFECYCLES:
            raise ValueError(f"{key}: not a GNN policy checkpoint (lifecycle {trained_for!r})")
        if self.requested is not None and self.requested != trained_for:
            raise ValueError(
                f"{key}: trained to decide under lifecycle {trained_for!r}, not "
                f"policy.lifecycle={self.requested!r} (set null to use the checkpoint's)"
            )
        trained = state.get("trained")
        if trained is not None and not isinstance(trained, dict):
            raise ValueError(
                f"{key}: not a GNN policy checkpoint ('trained' is a {type(trained).__name__}, "
                "not a mapping)"
            )
        weights = state.get("weights")
        if not isinstance(weights, dict):
            raise ValueError(
                f"{key}: not a GNN policy checkpoint (no 'weights', the mapping of tensor names "
                "to tensors)"
            )
        problems = misfits(weights, self.net.state_dict())
        if problems:
            # a header can claim this architecture over weights of another: name what differs
            raise ValueError(
                f"{key}: its weights do not fit this policy (hidden={self.net.hidden}, "
                f"layers={self.net.layers}): {'; '.join(problems)}; set policy.hidden / "
                "policy.layers to the checkpoint's, or pass one of this shape"
            )
        for name, tensor in weights.items():
            # NaN or inf weights would only fail at the first decision, mid-training
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{key}: its weights are not finite ({name} holds NaN or inf)")
        self.lifecycle = trained_for
        self.net.load_state_dict(weights)
        return dict(trained or {})

    def save_weights(self, path: Path, trained: dict[str, Any]) -> None:
        save_torch(
            {
                "format": FORMAT,
                "architecture": self.net.architecture(),
                "lifecycle": self.lifecycle,
                "weights": self.net.state_dict(),
                "trained": trained,
            },
            path,
        )

    # -- deciding --------------------------------------------------------------------------
    def _library(self, obs: Observation, masks: ActionMasks) -> Tensor:
        if self._blueprints is None or self._blueprints[0] != masks.blueprints:
            self._blueprints = (masks.blueprints, blueprint_features(masks.blueprints))
        return self._blueprints[1]

    def _pick(self, logits: Tensor, mask: Tensor) -> tuple[int, Tensor]:
        probs = torch.softmax(masked(logits, mask), dim=-1)
        if self.greedy:
            index = int(probs.argmax())
        else:
            index = int(torch.multinomial(probs, 1, generator=self.generator))
        return index, probs

    def inputs(self, obs: Observation) -> Inputs:
        """What the network reads at this step and what it may choose among (the masks, with
        the policy's caps and lifecycle folded in)."""
        graph = obs.graph
        if graph is None:
            raise ValueError(
                "policy=gnn needs the model graph: set seeds.graph to modules or sites"
            )
        data = graph.data
        if self.choice is None:
            # decisions run without gradients: time the forward pass alone (training with
            # Simic replays steps on the same choice)
            self.choice = self.backends.choose(
                self.setting,
                data.x.device,
                int(data.edge_index.shape[1]),
                self.net.hidden,
                passes="forward",
            )
            self.net.use(self.choice)
        under_cap = self.max_seeds is None or self.germinated < self.max_seeds
        masks = action_masks(obs, self.max_in_flight, under_cap)
        if self.lifecycle == "schedule":
            masks = germination_only(masks)
        return Inputs(
            data.x, data.edge_index, data.u, data.slot_index, masks, self._library(obs, masks)
        )

    def scheduled(self, obs: Observation) -> list[Decision]:
        """Under `lifecycle: schedule`, the heuristic's advance and keep-or-cull decisions."""
        if self.lifecycle != "schedule":
            return []
        return lifecycle_decisions(
            obs,
            self.training_epochs,
            lambda slot: keep_if_it_helps(slot, "val_accuracy", self.threshold),
        )

    @torch.no_grad()
    def decide(self, obs: Observation) -> list[Decision]:
        inputs = self.inputs(obs)
        masks, library = inputs.masks, inputs.library
        scheduled = self.scheduled(obs)
        heads = self.net(inputs.x, inputs.edge_index, inputs.u, inputs.slot_index, library)
        op, op_probs = self._pick(heads.operation[0], masks.operation)
        log_prob = float(torch.log(op_probs[op]))
        probabilities = {"action": float(op_probs[op])}
        # the whole operation distribution, for the W&B `policy/*` keys
        probabilities.update({f"op/{n}": float(p) for n, p in zip(OPERATIONS, op_probs)})
        slot = blueprint = -1
        decision = Decision(action="wait", reason="gnn")
        if OPERATIONS[op] != "wait":
            slot, slot_probs = self._pick(heads.slot, masks.slot[op])
            log_prob += float(torch.log(slot_probs[slot]))
            probabilities["slot"] = float(slot_probs[slot])
            name = obs.slots[slot].name
            chosen = None
            if OPERATIONS[op] == "germinate":
                blueprint, bp_probs = self._pick(heads.blueprint[slot], masks.blueprint[slot])
                log_prob += float(torch.log(bp_probs[blueprint]))
                probabilities["blueprint"] = float(bp_probs[blueprint])
                chosen = masks.blueprints[blueprint]
                self.germinated += 1
            shown = ", ".join(
                f"p({k})={v:.2f}" for k, v in probabilities.items() if not k.startswith("op/")
            )
            decision = Decision(
                action=OPERATIONS[op],  # type: ignore[arg-type]
                slot=name,
                blueprint=chosen,
                reason=f"gnn: {shown}",
                probabilities=probabilities,
            )
        else:
            decision = Decision(
                action="wait",
                reason=f"gnn: p(action)={probabilities['action']:.2f}",
                probabilities=probabilities,
            )
        if self.trace is not None:
            self.trace.append(
                Step(
                    obs.epoch,
                    inputs.x.clone(),
                    inputs.edge_index,
                    inputs.u.clone(),
                    inputs.slot_index,
                    library,
                    masks,
                    op,
                    slot,
                    blueprint,
                    log_prob,
                    float(heads.value[0]),
                )
            )
        return [*scheduled, decision]

    # -- state -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "checkpoint": self.checkpoint,
            "weights": "trained" if self.checkpoint else f"initial (seed {self.seed}), untrained",
            "trained": self.trained,
            "greedy": self.greedy,
            "lifecycle": self.lifecycle,
            "architecture": self.net.architecture(),
            "scatter": self.choice.model_dump(mode="json") if self.choice else None,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "generator": self.generator.get_state(),
            "germinated": self.germinated,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.generator.set_state(state["generator"])
        self.germinated = state["germinated"]
