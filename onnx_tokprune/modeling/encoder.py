"""The pruned encoder: an HF classifier's forward re-implemented with TokenPrune between layers.

Modes over the same weights and decisions (DESIGN.md §2):
- ``drop``: removed tokens leave the tensors (the ground truth the ONNX graph must match);
- ``mask``: the papers' simulation, full length with removed tokens masked out of attention;
- ``soft``: LTP's soft stage (threshold rule only): thresholds are trainable parameters and each
  pruning layer's output is multiplied by sigmoid((score - threshold) / temperature) per token
  (CLS 1, padding 0); nothing is removed or masked.
- ``gate``: ToP's training stage (rank_bins rule): `forward(..., gates={layer: (bin_gates [B],
  layer_gate [])})` takes hard-concrete samples; each pruning layer's output is multiplied by the
  token's bin gate (scoring.soft_rank_bins_keep) and tokens whose value is exactly 0 are masked from
  then on, so with 0/1 gates this is mask mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from onnx_tokprune.config import PruneConfig
from onnx_tokprune.scored_attention import mask_bias, mask_rows, scored_attention, split_heads
from onnx_tokprune.scoring import importance_score, keep_decision, soft_rank_bins_keep, token_prune

MODES = ("drop", "mask", "soft", "gate")


class PrunedOutput(NamedTuple):
    logits: torch.Tensor
    kept: tuple[torch.Tensor, ...]
    """Per pruning layer: drop mode — original positions [B,K] (-1 = padding);
    mask mode — the keep mask [B,S] (1 = kept); soft mode — the soft mask [B,S] in [0, 1]."""
    kept_index: tuple[torch.Tensor, ...] = ()
    """Drop mode: per pruning layer, TokenPrune's kept_index (positions in that layer's input)."""
    scores: dict[int, torch.Tensor] | None = None
    """Importance score [B,S] per pruning or observed layer (mask, soft and gate modes)."""


class PrunedEncoder(nn.Module):
    """Sequence classifier with token pruning after the configured layers."""

    def __init__(
        self,
        adapter,
        config: PruneConfig | None,
        mode: str = "drop",
        temperature: float = 1e-3,
        observe_layers: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "soft" and (config is None or config.rule != "threshold"):
            raise ValueError("soft mode needs a threshold-rule config (LTP)")
        if mode == "gate" and (config is None or config.rule != "rank_bins"):
            raise ValueError("gate mode needs a rank_bins-rule config (ToP)")
        self.observe_layers = tuple(observe_layers)
        self.temperature = temperature
        self.adapter = adapter
        self.model = adapter.model
        self.config = config
        self.mode = mode
        hf = self.model.config
        self.num_heads = hf.num_attention_heads
        self.head_dim = hf.hidden_size // hf.num_attention_heads
        self.num_layers = len(adapter.layers)
        if config is not None:
            config.check_model(self.num_layers)
        self.score_hook: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
        """Called as hook(layer, score, mask) at each pruning layer before it decides (calibration)."""
        self._params: dict[int, tuple[str, str, str]] = {}
        for rule in config.layers if config is not None else ():
            thr, bins, ratio = rule.op_params()
            names = tuple(f"prune{rule.layer}_{n}" for n in ("threshold", "bin_mask", "keep_ratio"))
            if mode == "soft":
                self.register_parameter(names[0], nn.Parameter(torch.tensor(thr, dtype=torch.float32)))
            else:
                self.register_buffer(names[0], torch.tensor(thr, dtype=torch.float32), persistent=False)
            self.register_buffer(names[1], torch.tensor(bins, dtype=torch.int64), persistent=False)
            self.register_buffer(names[2], torch.tensor(ratio, dtype=torch.float32), persistent=False)
            self._params[rule.layer] = names

    @property
    def pruning_layers(self) -> tuple[int, ...]:
        return tuple(self._params)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        gates: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> PrunedOutput:
        if self.mode == "gate" and gates is None:
            raise ValueError("gate mode needs gates={layer: (bin_gates, layer_gate)}")
        self._gates = gates
        mask = attention_mask.long()
        hidden = self.adapter.embed(input_ids, token_type_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(mask)
        positions = torch.where(mask == 1, positions, torch.full_like(positions, -1))
        kept: list[torch.Tensor] = []
        kept_index: list[torch.Tensor] = []
        self._scores: dict[int, torch.Tensor] = {}
        rows = mask_rows(mask, hidden.dtype)
        bias = mask_bias(rows)
        for index in range(self.num_layers):
            hidden, mask, positions, record, raw = self._layer(index, hidden, mask, rows, bias, positions)
            if raw is not None or (record is not None and self.mode in ("mask", "gate")):
                rows = mask_rows(mask, hidden.dtype)
                bias = mask_bias(rows)
            if record is not None:
                kept.append(record)
            if raw is not None:
                kept_index.append(raw)
        scores = None if self.mode == "drop" else self._scores
        return PrunedOutput(self.adapter.head(hidden), tuple(kept), tuple(kept_index), scores)

    def _layer(self, index, hidden, mask, rows, bias, positions):
        batch = hidden.shape[0]
        width = self.num_heads * self.head_dim  # static: no shape nodes in an exported graph
        names = self._params.get(index)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)

        projections = self.adapter.attention_projections(index)
        qkv = None
        if names is not None or index in self.observe_layers:
            # A scoring layer projects Q, K and V with one packed matrix (one GEMM instead of three).
            weight = torch.cat([p.weight for p in projections])
            qkv = F.linear(hidden, weight, torch.cat([p.bias for p in projections]))
        record = raw = None
        if names is not None and self.mode == "drop" and not self.training:
            # attention and score in one op: one `tokprune::ScoredAttention` node when exported
            context, score = scored_attention(qkv, mask, self.num_heads, self.config.normalizer_constant())
        else:
            q, k, v = split_heads(qkv, self.num_heads) if qkv is not None else (heads(p(hidden)) for p in projections)
            # Div, not Mul: with two Mul parents on the Add, onnxruntime's attention fuser cannot tell the
            # scaled scores from the mask bias and leaves the layer unfused.
            logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + bias
            probs = torch.softmax(logits, dim=-1)
            context = torch.matmul(self.adapter.attention_dropout(index)(probs), v)
            context = context.transpose(1, 2).reshape(batch, -1, self.num_heads * self.head_dim)
            if names is None and index in self.observe_layers:
                normalizer = self.config.normalizer_constant() if self.config is not None else None
                self._scores[index] = importance_score(probs, mask, normalizer, rows)
            if names is not None:
                score = importance_score(probs, mask, self.config.normalizer_constant(), rows)
        if names is not None:
            self._scores[index] = score
            if self.score_hook is not None:
                self.score_hook(index, score, mask)
            params = [getattr(self, n) for n in names]
            rounding = self.config.bin_rounding
            if self.mode == "drop":
                pruned = token_prune(torch.cat([context, hidden], dim=-1), score, mask, *params, rounding)
                context, hidden = pruned.hidden[..., :width], pruned.hidden[..., width:]
                mask, raw = pruned.mask, pruned.kept_index
                taken = torch.gather(positions, 1, pruned.kept_index.clamp(min=0))
                positions = torch.where(pruned.kept_index >= 0, taken, torch.full_like(taken, -1))
                record = positions
            elif self.mode == "mask":
                mask = keep_decision(score, mask, *params, rounding).long()
                record = mask
            elif self.mode == "gate":
                bin_gates, layer_gate = self._gates[index]
                soft = soft_rank_bins_keep(score, mask, bin_gates, layer_gate)
                out = self.adapter.finish_layer(index, context, hidden) * soft.unsqueeze(-1).to(hidden.dtype)
                return out, mask * (soft > 0).long(), positions, soft, raw
            else:
                soft = torch.sigmoid((score - params[0]) / self.temperature) * mask.to(score.dtype)
                soft = torch.cat([torch.ones_like(soft[:, :1]), soft[:, 1:]], dim=1)
                out = self.adapter.finish_layer(index, context, hidden) * soft.unsqueeze(-1).to(hidden.dtype)
                return out, mask, positions, soft, raw
        return self.adapter.finish_layer(index, context, hidden), mask, positions, record, raw

    def thresholds(self) -> dict[int, float]:
        """Current threshold per pruning layer (the learned values in soft mode)."""
        return {layer: float(getattr(self, names[0]).detach()) for layer, names in self._params.items()}
