"""What a policy sees (Observation) and what it answers (Decision)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from esper.contracts.base import ActivationKind, Frozen, SeedState


class SiteStats(Frozen):
    """Statistics of one site, measured on one training batch at each control step (eval mode,
    so dropout and batch-norm updates do not disturb them)."""

    activation_mean: float
    """Mean over every element of the site's output activation."""
    activation_std: float
    """Standard deviation over every element of the site's output activation."""
    grad_norm: float
    """L2 norm of the training-loss gradient reaching the site's output: where the loss pulls."""


class SlotObservation(Frozen):
    """What a policy sees of one seed slot at a control step (end of an epoch)."""

    name: str
    """The site's module name in the host (`blocks.0`); decisions name slots by it."""
    kind: ActivationKind
    """`vector` [B, F], `image` [B, C, H, W] or `sequence` [B, T, D]."""
    shape: tuple[int, ...]
    """The activation shape without the batch dimension."""
    state: SeedState
    """Lifecycle state after this control step's bookkeeping (ticks, kernel attachment)."""
    blueprint: str | None = None
    """The blueprint of the seed in the slot; None while DORMANT."""
    epochs_in_state: int = 0
    """Control steps since the slot entered `state` (0 in the step it entered)."""
    kernel_ready: bool = False
    """GERMINATED only: the kernel is attached and the seed may start TRAINING."""
    alpha: float = 0.0
    """Blend weight of the seed's output: 0 until BLENDING, ramps to 1, 1 when FOSSILIZED."""
    verdict_in: int = 0
    """BLENDING only: epochs until a keep-or-cull verdict is due: the rest of the alpha ramp,
    then `seeds.probation_epochs` at full blend (a shadow trains on beside it). 0: due now.
    Rule-based keepers (heuristic, random, gnn under `schedule`) judge a seed only then."""
    embargo_left: int = 0
    """CULLED only: control steps until the slot is DORMANT again and may germinate."""
    stats: SiteStats | None = None
    """The site's activation and gradient statistics this step; None if not measured."""
    contribution_accuracy: float | None = None
    """BLENDING only: validation accuracy with the seed minus without it: the same model with
    the seed bypassed, or its shadow (`seeds.contribution`)."""
    contribution_loss: float | None = None
    """BLENDING only: validation loss without the seed minus with it (positive: it helps)."""
    seed_grad_norm_max: float | None = None
    """Largest L2 norm of the seed's own gradient over its training steps so far."""
    tried: dict[str, int] = Field(default_factory=dict)
    """How many times each blueprint has germinated in this slot during the run."""


class Observation(Frozen):
    """Everything a policy is told at one control step. Validation only: never test."""

    epoch: int
    """The epoch that just ended (0-based)."""
    max_epochs: int
    """The run's length in epochs; `epoch / max_epochs` is the run's progress."""
    train_loss: float
    """Mean training loss over the epoch's steps (skipped non-finite steps excluded)."""
    train_accuracy: float
    """Training accuracy over the epoch, measured while training (dropout on)."""
    val_loss: float
    """Validation loss after the epoch, evaluated in eval mode."""
    val_accuracy: float
    """Validation accuracy after the epoch."""
    val_loss_history: tuple[float, ...]
    """Validation loss after every epoch so far, this one last (a resumed run included)."""
    slots: tuple[SlotObservation, ...]
    """Every slot, in the host's module order."""
    allowed_blueprints: dict[str, tuple[str, ...]]
    """Per slot name: the configured blueprints that fit the slot's activation shape."""
    graph: Any = Field(default=None, exclude=True, repr=False)
    """The model graph (`esper.seeds.ModelGraph`) with this step's features written in; None
    where no graph was built. Not serialised: events carry the fields above."""


Action = Literal["germinate", "advance", "fossilize", "cull", "wait"]


class Decision(Frozen):
    """One thing a policy asks for. The trainer applies it through the quality gates, which may
    refuse (a `gate_refused` event) or cull instead (an `adaptation` event says why).

    - `germinate`: DORMANT slot, with a `blueprint` from `allowed_blueprints[slot]`.
    - `advance`: GERMINATED (kernel ready) -> TRAINING, or TRAINING -> BLENDING. The slot's state
      says which; there is one action because a policy only ever has one way forward.
    - `fossilize` / `cull`: keep or remove a seed (fossilize from BLENDING).
    - `wait`: do nothing; `slot` may be None.
    """

    action: Action
    slot: str | None = None
    """The slot's name; required for every action but `wait`."""
    blueprint: str | None = None
    """`germinate` only."""
    reason: str = ""
    """Free text recorded with the adaptation the decision causes."""
    probabilities: dict[str, float] | None = None
    """Optional: the policy's probability of the chosen action, slot and blueprint, for the
    decision log of a stochastic or learned policy."""
