"""The model graph as the GNN policy reads it: a PyG `Data` whose feature tensors are written in
place at each control step (only slot rows and the globals change; module rows are static).

Every feature is normalised so that one policy serves hosts of very different sizes: counts go
through `tanh` or a share of the host, magnitudes through `log1p`, losses relative to their own
history. The tables below are the contract a policy author (or a trained checkpoint) relies on.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch_geometric.data import Data

from esper.contracts import Observation, SeedState
from esper.seeds.graph import KIND_NAMES, GraphSpec, undirected

STATES = tuple(SeedState)
NODE_FEATURES = (
    "is_slot",
    *(f"kind_{k}" for k in KIND_NAMES),
    "param_share",  # the module's parameters / the host's (0 for slots)
    "depth",  # position in forward order, 0 .. 1
    *(f"state_{s.value.lower()}" for s in STATES),  # slots only, one-hot
    "alpha",  # blend weight, 0 .. 1
    "epochs_in_state",  # tanh(epochs / 5)
    "embargo_left",  # tanh(control steps / 2)
    "contribution",  # val accuracy gained by the seed (BLENDING), clamped to [-1, 1]
    "contribution_measured",  # 1 when the contribution above was measured this step
    "kernel_ready",
    "activation_mean",  # tanh of the site's activation mean
    "activation_std",  # log1p of the site's activation std
    "grad_share",  # the site's gradient norm / the largest over sites
    "grad_norm",  # log1p of the site's gradient norm
    "tried",  # tanh(germinations in this slot / 3)
    "seed_share",  # the seed's parameters / the host's
    "latency",  # log1p(the kernel's characterised forward latency in us) / 10
)
GLOBAL_FEATURES = (
    "progress",  # epoch / max_epochs
    "train_loss",  # log1p
    "val_loss",  # log1p
    "train_accuracy",
    "val_accuracy",
    "val_change_1",  # (val loss now - 1 epoch ago) / val loss now, clamped to [-1, 1]
    "val_change_3",  # the same over 3 epochs
    "val_gap_to_best",  # (val loss now - best so far) / val loss now
    "grown_share",  # tanh(seed parameters / host parameters)
    "in_flight",  # slots germinated, training or blending / slots
    "fossilized",  # slots fossilized / slots
)
N_NODE, N_GLOBAL = len(NODE_FEATURES), len(GLOBAL_FEATURES)
_COL = {name: i for i, name in enumerate(NODE_FEATURES)}
_STATE0 = _COL[f"state_{STATES[0].value.lower()}"]


def _relative_change(now: float, before: float) -> float:
    if not (math.isfinite(now) and math.isfinite(before)) or now == 0:
        return 0.0
    return max(-1.0, min(1.0, (now - before) / abs(now)))


class ModelGraph:
    """A model's graph (see `esper.seeds.graph`) with the features the policy reads.

    `data.x` [nodes, N_NODE], `data.edge_index` [2, 2 * edges] (both directions), `data.u`
    [1, N_GLOBAL], `data.slot_index` [slots] (node of each slot, in the model's slot order).
    `update()` rewrites slot rows and `u` in place: no tensor is reallocated after build.
    """

    def __init__(self, spec: GraphSpec, slot_order: list[str]) -> None:
        self.spec = spec
        self.source = spec.source
        nodes = len(spec.nodes)
        x = torch.zeros((nodes, N_NODE))
        host_params = max(1, sum(spec.params))
        for i, (kind, params) in enumerate(zip(spec.kinds, spec.params)):
            if kind == "slot":
                x[i, _COL["is_slot"]] = 1.0
            else:
                x[i, _COL[f"kind_{kind}"]] = 1.0
                x[i, _COL["param_share"]] = params / host_params
            x[i, _COL["depth"]] = i / max(1, nodes - 1)
        self.host_params = host_params
        self.slot_order = slot_order
        slot_index = torch.tensor([spec.slot_nodes[s] for s in slot_order], dtype=torch.long)
        self._parts = {
            "x": x,
            "edge_index": undirected(spec.edges),
            "u": torch.zeros((1, N_GLOBAL)),
            "slot_index": slot_index,
        }
        self._data: Data | None = None

    @property
    def data(self) -> Data:
        """The PyG `Data` over the feature tensors (the same tensors: `update()` writes into
        it). Made when first read: importing torch_geometric costs about 1.8 s a process on
        this CPU (it imports torch._dynamo), which a run whose policy reads no graph (`none`,
        `random`, `heuristic`; every kernel-compile worker) does not pay."""
        if self._data is None:
            with warnings.catch_warnings():  # torch_geometric 2.8 calls torch.jit.script
                warnings.filterwarnings(
                    "ignore", "`torch.jit.script` is deprecated", DeprecationWarning
                )
                from torch_geometric.data import Data

            self._data = Data(**self._parts, num_nodes=self.num_nodes)
        return self._data

    @data.setter
    def data(self, data: Data) -> None:  # moved to a device (`data.to(device)`)
        self._data = data

    @property
    def num_nodes(self) -> int:
        return int(self._parts["x"].shape[0])

    def update(
        self,
        obs: Observation,
        seed_params: dict[str, int],
        latency_us: dict[str, float],
    ) -> None:
        """Write this step's telemetry into the slot rows and the globals, in place."""
        tensors = self._parts if self._data is None else self._data
        x, u, slot_index = tensors["x"], tensors["u"], tensors["slot_index"]
        grads = [s.stats.grad_norm for s in obs.slots if s.stats is not None]
        top_grad = max((g for g in grads if math.isfinite(g)), default=0.0) or 1.0
        rows: list[list[float]] = []
        for slot in obs.slots:
            state = [0.0] * len(STATES)
            state[STATES.index(slot.state)] = 1.0
            gained = slot.contribution_accuracy
            act_mean = act_std = grad_share = grad_log = 0.0
            if slot.stats is not None:
                stats = slot.stats
                grad = stats.grad_norm if math.isfinite(stats.grad_norm) else top_grad
                act_mean = math.tanh(stats.activation_mean)
                act_std = math.log1p(max(0.0, stats.activation_std))
                grad_share, grad_log = grad / top_grad, math.log1p(grad)
            rows.append(
                [
                    *state,
                    slot.alpha,
                    math.tanh(slot.epochs_in_state / 5),
                    math.tanh(slot.embargo_left / 2),
                    0.0 if gained is None else max(-1.0, min(1.0, gained)),
                    float(gained is not None),
                    float(slot.kernel_ready),
                    act_mean,
                    act_std,
                    grad_share,
                    grad_log,
                    math.tanh(sum(slot.tried.values()) / 3),
                    seed_params.get(slot.name, 0) / self.host_params,
                    math.log1p(latency_us.get(slot.name, 0.0)) / 10,
                ]
            )
        x[slot_index, _STATE0:] = torch.nan_to_num(torch.tensor(rows))
        history = obs.val_loss_history
        now = history[-1] if history else obs.val_loss
        grown = sum(seed_params.values()) / self.host_params
        states = [s.state for s in obs.slots]
        in_flight = sum(
            s in (SeedState.GERMINATED, SeedState.TRAINING, SeedState.BLENDING) for s in states
        )
        finite = [h for h in history if math.isfinite(h)]
        globals_ = [
            obs.epoch / max(1, obs.max_epochs),
            math.log1p(max(0.0, obs.train_loss)) if math.isfinite(obs.train_loss) else 0.0,
            math.log1p(max(0.0, obs.val_loss)) if math.isfinite(obs.val_loss) else 0.0,
            obs.train_accuracy if math.isfinite(obs.train_accuracy) else 0.0,
            obs.val_accuracy if math.isfinite(obs.val_accuracy) else 0.0,
            _relative_change(now, history[-2]) if len(history) > 1 else 0.0,
            _relative_change(now, history[-4]) if len(history) > 3 else 0.0,
            _relative_change(now, min(finite)) if finite else 0.0,
            math.tanh(grown),
            in_flight / max(1, len(states)),
            sum(s is SeedState.FOSSILIZED for s in states) / max(1, len(states)),
        ]
        u[0] = torch.tensor(globals_)
