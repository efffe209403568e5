"""One decision object per pruning method: what a pruning layer does with its tokens' scores.

Hard decisions are the rules an artifact runs (config.RULES). Each is the unified TokenPrune rule
(scoring.keep_decision) with its own parameter and the others neutral:
- `ThresholdDecision` (LTP, calibration): keep a token whose score reaches the threshold;
- `TopKDecision` (calibration, static baselines): keep the top ceil(r * n);
- `RankBinsDecision` (ToP): keep a token whose rank bin is open.
`keep(score, mask)` gives the boolean keep mask (mask mode); `prune(hidden, score, mask)` removes the
dropped rows (drop mode; one `tokprune::TokenPrune` node when exported).

Soft decisions are the training-time relaxations; `weight(score, mask, inputs)` gives each token's
multiplier in [0, 1] for the layer's output:
- `LTPSoftMask` (LTP's soft stage): sigmoid((score - threshold) / T) with a trainable threshold;
- `ToPGateMask` (ToP): the token's rank-bin gate, with the layer gate straight-through
  (scoring.soft_rank_bins_keep), from the gate samples passed per forward; a token whose value is
  exactly 0 is masked from then on (`masks_zeros`), so with 0/1 gates it is mask mode.

Adding a method: a Decision here (and, for a new hard rule, its parameter in config.RULES and the
TokenPrune op), registered in HARD or SOFT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from onnx_tokprune.config import LayerRule, PruneConfig
from onnx_tokprune.scoring import PruneResult, keep_decision, soft_rank_bins_keep, token_prune


class Decision(nn.Module):
    """The decision of one pruning layer."""

    soft = False
    masks_zeros = False
    """Soft decisions only: whether a token whose weight is exactly 0 is masked from then on."""

    def __init__(self, layer: int) -> None:
        super().__init__()
        self.layer = layer


class HardDecision(Decision):
    """The unified TokenPrune rule with (threshold, bin_mask, keep_ratio) held as buffers."""

    def __init__(self, rule: LayerRule, bin_rounding: str = "exact") -> None:
        super().__init__(rule.layer)
        threshold, bins, ratio = rule.op_params()
        self.bin_rounding = bin_rounding
        self.register_buffer("threshold", torch.tensor(threshold, dtype=torch.float32), persistent=False)
        self.register_buffer("bin_mask", torch.tensor(bins, dtype=torch.int64), persistent=False)
        self.register_buffer("keep_ratio", torch.tensor(ratio, dtype=torch.float32), persistent=False)

    def keep(self, score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Boolean [B,S]: the tokens this layer keeps (CLS always; removed tokens never come back)."""
        return keep_decision(score, mask, self.threshold, self.bin_mask, self.keep_ratio, self.bin_rounding)

    def prune(self, hidden: torch.Tensor, score: torch.Tensor, mask: torch.Tensor) -> PruneResult:
        """The kept rows of `hidden` packed to the left, their mask and kept_index (TokenPrune)."""
        return token_prune(hidden, score, mask, self.threshold, self.bin_mask, self.keep_ratio, self.bin_rounding)


class ThresholdDecision(HardDecision):
    """LTP's rule: keep j iff score >= threshold."""


class TopKDecision(HardDecision):
    """Keep the top ceil(keep_ratio * n) of the n kept non-CLS tokens by score."""


class RankBinsDecision(HardDecision):
    """ToP's rule: keep j iff the bin of its rank is open in bin_mask."""


class LTPSoftMask(Decision):
    """LTP's soft stage: the layer's output times sigmoid((score - threshold) / T) per token, the
    threshold trainable; CLS 1, padding 0. Nothing is removed or masked."""

    soft = True

    def __init__(self, rule: LayerRule, temperature: float) -> None:
        super().__init__(rule.layer)
        self.temperature = temperature
        self.threshold = nn.Parameter(torch.tensor(float(rule.threshold), dtype=torch.float32))

    def weight(self, score: torch.Tensor, mask: torch.Tensor, inputs: Any = None) -> torch.Tensor:
        soft = torch.sigmoid((score - self.threshold) / self.temperature) * mask.to(score.dtype)
        return torch.cat([torch.ones_like(soft[:, :1]), soft[:, 1:]], dim=1)


class ToPGateMask(Decision):
    """ToP's training decision: `inputs` = (bin gates [B], layer gate []) sampled for this forward."""

    soft = True
    masks_zeros = True

    def weight(self, score: torch.Tensor, mask: torch.Tensor, inputs: Any = None) -> torch.Tensor:
        if inputs is None:
            raise ValueError(f"layer {self.layer}: the ToP gate decision needs gates={{layer: (bin_gates, layer_gate)}}")
        bin_gates, layer_gate = inputs
        return soft_rank_bins_keep(score, mask, bin_gates, layer_gate)


HARD: dict[str, type[HardDecision]] = {"threshold": ThresholdDecision, "top_k": TopKDecision, "rank_bins": RankBinsDecision}
"""Per config rule, the decision an artifact runs."""
SOFT: dict[str, tuple[str, Callable[[LayerRule, float], Decision]]] = {
    "soft": ("threshold", LTPSoftMask),
    "gate": ("rank_bins", lambda rule, temperature: ToPGateMask(rule.layer)),
}
"""Per training mode, the rule it relaxes and how its soft decision is built from (rule, temperature)."""


def build_decisions(config: PruneConfig | None, mode: str, temperature: float = 1e-3) -> nn.ModuleDict:
    """The decision of every pruning layer of `config` for a PrunedEncoder mode ("drop"/"mask": the
    hard rule; "soft": LTP's soft mask; "gate": ToP's gates), keyed by str(layer)."""
    decisions = nn.ModuleDict()
    if config is None:
        return decisions
    if mode in SOFT:
        rule, build = SOFT[mode]
        if config.rule != rule:
            raise ValueError(f"{mode} mode needs a {rule}-rule config, got {config.rule!r}")
        for r in config.layers:
            decisions[str(r.layer)] = build(r, temperature)
        return decisions
    for r in config.layers:
        decisions[str(r.layer)] = HARD[config.rule](r, config.bin_rounding)
    return decisions
