"""ToP's FLOPs constraint in one module: the gates, their expected FLOPs, the Lagrangian with its
target ramp, the binarisation matched to a target, and the gate state a checkpoint keeps.

- `ToPGates`: per candidate layer B hard-concrete rank-bin gates and one layer gate (`training.l0`),
  initialised as ToP does (every bin open, every layer gate closed).
- `expected_relative_flops`: expected pruned / unpruned FLOPs from the expected kept fraction per
  layer (mean bin open probability, times the probability the layer prunes), in the analytic FLOPs
  model of `onnx_tokprune.flops` (EncoderShape.expected_flops).
- `FlopsConstraint`: the Lagrangian `l1 (s - t) + l2 (s - t)^2` on sparsity s = 1 - FLOPs, l1 and l2
  trained by gradient ascent (their gradient is negated), t ramping linearly from 0 to
  1 - target_flops over the warm-up steps.
- `match_target_flops`: the binarised gates moved, one bin at a time, as close to a FLOPs target as
  a measurement on real inputs allows.
- `GateState`: the gates' log-alphas, the multipliers and the constraint history, written beside
  the checkpoint as `top_gates.json` (what `tokprune match-flops` re-binarises).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onnx_tokprune.config import LayerRule, PruneConfig
from onnx_tokprune.errors import TrainingError
from onnx_tokprune.flops import EncoderShape
from onnx_tokprune.io import read_json
from onnx_tokprune.training.l0 import HardConcreteGate

BIN_GATE_INIT = 10.0
LAYER_GATE_INIT = -10.0
"""ToP's initial log-alphas (clamped to +-log 100 at once): every bin open, every layer gate closed."""
GATES_FILE = "top_gates.json"
GATES_VERSION = 1


def expected_relative_flops(
    shape: EncoderShape, lengths: torch.Tensor, layers: tuple[int, ...], keep: torch.Tensor, prunes: torch.Tensor
) -> torch.Tensor:
    """Expected pruned / unpruned FLOPs over a batch of inputs of `lengths` tokens.

    `keep[p]` is layer p's expected kept fraction of non-CLS tokens and `prunes[p]` the probability
    that it prunes (scores its tokens; a layer that does not prune is removed from the graph).
    """
    n = lengths.to(keep.dtype)
    expected = shape.expected_flops(n, {layer: (keep[p], prunes[p]) for p, layer in enumerate(layers)})
    return expected.sum() / shape.flops(n).sum()


class ToPGates(nn.Module):
    """Rank-bin gates [P, B] and layer gates [P] of the candidate layers, with ToP's initialisation."""

    def __init__(self, layers: tuple[int, ...], bins: int, shape: EncoderShape) -> None:
        super().__init__()
        self.layers = tuple(layers)
        self.shape = shape
        self.bin_gates = HardConcreteGate((len(layers), bins), init_mean=BIN_GATE_INIT)
        self.layer_gates = HardConcreteGate((len(layers), 1), init_mean=LAYER_GATE_INIT)

    def forward(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """{layer: (bin gates [B], layer gate [])}: samples in training, binarised in eval."""
        bins, gate = self.bin_gates(), self.layer_gates()
        return {layer: (bins[p], gate[p, 0]) for p, layer in enumerate(self.layers)}

    def expected(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(expected kept fraction [P], probability the layer prunes [P])."""
        return self.bin_gates.open_probability().mean(-1), self.layer_gates.open_probability()[:, 0]

    def expected_relative_flops(self, lengths: torch.Tensor) -> torch.Tensor:
        keep, prunes = self.expected()
        return expected_relative_flops(self.shape, lengths, self.layers, keep, prunes)

    def constrain(self) -> None:
        self.bin_gates.constrain()
        self.layer_gates.constrain()

    def binarized_rules(self, bins: torch.Tensor | None = None) -> tuple[LayerRule, ...]:
        """The layers that prune after binarisation (gate 1 and at least one closed bin); `bins`
        overrides the binarised bin gates [P, B]."""
        bins = self.bin_gates.binarize() if bins is None else bins
        gate = self.layer_gates.binarize()
        rules = []
        for p, layer in enumerate(self.layers):
            mask = tuple(int(b) for b in bins[p].tolist())
            if gate[p, 0] > 0 and 0 in mask:
                rules.append(LayerRule(layer, bin_mask=mask))
        return tuple(rules)

    def state(self, target_flops: float, lagrange: torch.Tensor, history: list[dict]) -> GateState:
        keep, prunes = self.expected()
        return GateState(
            candidate_layers=list(self.layers),
            bin_log_alpha=[[round(float(v), 3) for v in row] for row in self.bin_gates.log_alpha.detach()],
            layer_log_alpha=[round(float(v), 3) for v in self.layer_gates.log_alpha.detach()[:, 0]],
            target_flops=target_flops,
            lagrange=[float(v) for v in lagrange.detach()],
            expected_keep=[round(float(k), 4) for k in keep.detach()],
            layer_gate_open_probability=[round(float(p), 4) for p in prunes.detach()],
            history=history,
        )

    @classmethod
    def from_state(cls, state: GateState, shape: EncoderShape) -> ToPGates:
        gates = cls(tuple(state.candidate_layers), len(state.bin_log_alpha[0]), shape)
        with torch.no_grad():
            gates.bin_gates.log_alpha.copy_(torch.tensor(state.bin_log_alpha))
            gates.layer_gates.log_alpha.copy_(torch.tensor(state.layer_log_alpha)[:, None])
        return gates


class FlopsConstraint(nn.Module):
    """The Lagrangian that pulls the expected relative FLOPs to `target_flops` (module docstring)."""

    def __init__(self, target_flops: float, warmup_steps: int) -> None:
        super().__init__()
        self.target_flops = target_flops
        self.warmup_steps = max(1, warmup_steps)
        self.lagrange = nn.Parameter(torch.zeros(2))
        self.lagrange.register_hook(lambda grad: -grad)  # gradient ascent on the multipliers

    def progress(self, step: int) -> float:
        """Warm-up progress in [0, 1] at a training step."""
        return min(1.0, step / self.warmup_steps)

    def target_sparsity(self, step: int) -> float:
        """The ramped sparsity target t (1 - relative FLOPs) at a training step."""
        return (1 - self.target_flops) * self.progress(step)

    def target(self, step: int) -> float:
        """The ramped relative-FLOPs target at a training step."""
        return 1 - self.target_sparsity(step)

    def forward(self, expected_flops: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """(the Lagrangian term, a record of the constraint for the history)."""
        gap = (1 - expected_flops) - self.target_sparsity(step)
        penalty = self.lagrange[0] * gap + self.lagrange[1] * gap * gap
        record = {
            "expected_flops": float(expected_flops.detach()),
            "target_flops": self.target(step),
            "lambda1": float(self.lagrange[0].detach()),
            "lambda2": float(self.lagrange[1].detach()),
        }
        return penalty, record


def match_target_flops(
    gates: ToPGates, measure: Callable[[PruneConfig | None], float], target: float, method: dict
) -> tuple[tuple[LayerRule, ...], float, int]:
    """Open (or close) one bin at a time, the closed bin with the largest log-alpha (or the open one
    with the smallest) among the layers whose gate is open, while the measured relative FLOPs moves
    closer to `target`; a bin that changes nothing on the sample is skipped and left as it was.
    `measure(config)` gives a config's relative FLOPs on real inputs (None: nothing prunes), `method`
    the PruneConfig fields besides the layers. Returns (rules, measured FLOPs, bins changed)."""
    bins = gates.bin_gates.binarize()
    open_layers = gates.layer_gates.binarize()[:, 0] > 0
    log_alpha = gates.bin_gates.log_alpha.detach()

    def rules_of(b):
        rules = gates.binarized_rules(b)
        return rules, measure(PruneConfig(layers=rules, **method) if rules else None)

    rules, flops = rules_of(bins)
    changed = 0
    idle = torch.zeros_like(bins, dtype=torch.bool)
    while True:
        opening = flops < target
        candidates = ((bins == 0) if opening else (bins == 1)) & open_layers[:, None] & ~idle
        if not candidates.any():
            break
        scores = torch.where(candidates, log_alpha, torch.full_like(log_alpha, float("-inf") if opening else float("inf")))
        flat = int(scores.argmax() if opening else scores.argmin())
        trial = bins.clone()
        trial.view(-1)[flat] = 1.0 if opening else 0.0
        trial_rules, trial_flops = rules_of(trial)
        if trial_flops == flops:
            idle.view(-1)[flat] = True  # a bin no sampled token falls into: leave it as it was
            continue
        if abs(trial_flops - target) >= abs(flops - target):
            break
        bins, rules, flops, changed = trial, trial_rules, trial_flops, changed + 1
    return rules, flops, changed


@dataclass
class GateState:
    """What a ToP checkpoint keeps of its gates and constraint (the file GATES_FILE)."""

    candidate_layers: list[int]
    bin_log_alpha: list[list[float]]
    layer_log_alpha: list[float]
    target_flops: float
    lagrange: list[float] = field(default_factory=lambda: [0.0, 0.0])
    expected_keep: list[float] = field(default_factory=list)
    layer_gate_open_probability: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    """The constraint over training: step, expected and target FLOPs, multipliers, ranking loss."""
    version: int = GATES_VERSION

    def __post_init__(self) -> None:
        layers, bins = self.candidate_layers, self.bin_log_alpha
        if not isinstance(layers, list) or not layers or any(type(x) is not int or x < 0 for x in layers):
            raise TrainingError(f"{GATES_FILE}: candidate_layers must list layer indices, got {layers!r}")
        if not isinstance(bins, list) or len(bins) != len(layers) or any(not isinstance(r, list) or len(r) != len(bins[0]) or not r for r in bins):
            raise TrainingError(f"{GATES_FILE}: bin_log_alpha must hold one equal-length row per candidate layer")
        if not isinstance(self.layer_log_alpha, list) or len(self.layer_log_alpha) != len(layers):
            raise TrainingError(f"{GATES_FILE}: layer_log_alpha must hold one value per candidate layer")
        if not isinstance(self.target_flops, (int, float)) or not 0 < self.target_flops < 1:
            raise TrainingError(f"{GATES_FILE}: target_flops must be in (0, 1), got {self.target_flops!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> GateState:
        if not isinstance(data, dict):
            raise TrainingError(f"{GATES_FILE} must hold a JSON object")
        if data.get("version") != GATES_VERSION:
            raise TrainingError(f"{GATES_FILE}: version {data.get('version')!r} is not supported (expected {GATES_VERSION})")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise TrainingError(f"{GATES_FILE}: unknown key(s) {sorted(unknown)}")
        missing = {"candidate_layers", "bin_log_alpha", "layer_log_alpha", "target_flops"} - set(data)
        if missing:
            raise TrainingError(f"{GATES_FILE}: missing key(s) {sorted(missing)}")
        return cls(**data)

    @classmethod
    def load(cls, directory: str | os.PathLike, provenance: dict | None = None) -> GateState:
        """The gate state of a ToP checkpoint; TrainingError when there is none or it is malformed.
        Checkpoints written before the gate state had its own file kept it in tokprune.json's
        provenance: pass that provenance to read it from there."""
        path = Path(directory) / GATES_FILE
        if not path.is_file() and provenance and "bin_log_alpha" in provenance:
            return cls.from_json({"version": GATES_VERSION, **{k: v for k, v in provenance.items() if k in cls.__dataclass_fields__}})
        missing = "not found: the checkpoint was not written by tokprune-train top"
        return cls.from_json(read_json(path, TrainingError, missing, "train the checkpoint again"))
