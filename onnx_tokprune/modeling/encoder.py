"""The pruned encoder: an HF classifier's forward re-implemented with a decision between layers.

Each pruning layer holds one decision object (onnx_tokprune.decisions); the mode picks which
(docs/design.md §2):
- ``drop``: the config's hard rule; removed tokens leave the tensors (the ground truth the ONNX
  graph must match);
- ``mask``: the same rule as the papers simulate it: full length, removed tokens masked out of attention;
- ``soft``: LTP's soft stage (threshold rule): a trainable threshold, each token's output times
  sigmoid((score - threshold) / T);
- ``gate``: ToP's training stage (rank_bins rule): `forward(..., gates={layer: (bin_gates [B],
  layer_gate [])})` takes hard-concrete samples; a token's output is multiplied by its bin's gate and a
  token whose value is exactly 0 is masked from then on, so with 0/1 gates this is mask mode.

A span head (extractive QA, `head="span"`) needs every position's last hidden state. Restore (LAT's
drop-and-restore, docs/design.md §7): a token removed at layer l keeps the hidden state it entered
layer l with, and the final sequence is rebuilt at full input length before the head: before each
pruning layer and after the last layer, the present tokens' states are scattered into a [B,S+1,D]
buffer at their original positions (column S takes padding's writes and is cut off). Mask mode keeps
the same buffer, so drop and mask still compute the same thing. The soft modes (LTP's soft stage, ToP's
gates) restore in expectation: a token's final state is sum_l P(removed at l) * (its state entering l)
+ P(kept throughout) * (its last state), with P from the layers' multipliers (alive_l = prod of the
multipliers so far); with 0/1 multipliers that is mask mode's restore.

CLS-only last layer (`cls_only=True`, sequence head, docs/design.md §7): the head reads only the CLS
row, so the last layer projects the query of that row alone, attends over every present key, and
runs the output projection and FFN on that one row. Exact (the logits are those of the full layer);
it applies when the last layer does not itself prune (`cls_only_applies`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from onnx_tokprune.config import PruneConfig
from onnx_tokprune.decisions import Decision, build_decisions
from onnx_tokprune.scored_attention import mask_bias, mask_rows, scored_attention, split_heads
from onnx_tokprune.scoring import importance_score

MODES = ("drop", "mask", "soft", "gate")
PROTECT_BONUS = 1e4
"""Added to a protected token's score before a decision: above every threshold and every other score
(scores are at most max_positions / normaliser length)."""


class PrunedOutput(NamedTuple):
    logits: torch.Tensor
    """Sequence head: [B,C]; span head: [B,S,2], start and end logits at every input position."""
    kept: tuple[torch.Tensor, ...]
    """Per pruning layer, [B,S] over the input positions, in every mode: 1 where the token is still
    present after that layer, 0 where it was removed there or earlier (padding 0); for the soft
    decisions (soft, gate modes) the layer's own multiplier in [0, 1]. Empty while exporting."""
    kept_index: tuple[torch.Tensor, ...] = ()
    """Drop mode: per pruning layer, TokenPrune's kept_index (positions in that layer's input)."""
    scores: dict[int, torch.Tensor] | None = None
    """Importance score [B,S] per pruning or observed layer (mask, soft and gate modes)."""

    @property
    def start_logits(self) -> torch.Tensor:
        return self.logits[..., 0]

    @property
    def end_logits(self) -> torch.Tensor:
        return self.logits[..., 1]


def kept_positions(kept: torch.Tensor) -> list[list[int]]:
    """Per row of a PrunedOutput.kept entry, the input positions still present, ascending."""
    return [torch.nonzero(row > 0).flatten().tolist() for row in kept]


class PrunedEncoder(nn.Module):
    """Sequence classifier or span (QA) model with token pruning after the configured layers."""

    def __init__(
        self,
        adapter,
        config: PruneConfig | None,
        mode: str = "drop",
        temperature: float = 1e-3,
        observe_layers: tuple[int, ...] = (),
        head: str = "sequence",
        cls_only: bool = False,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if head not in ("sequence", "span"):
            raise ValueError(f"head must be sequence or span, got {head!r}")
        self.head = head
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
            config.check_model(self.num_layers, type_vocab_size=getattr(hf, "type_vocab_size", 1))
        self.score_hook: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
        """Called as hook(layer, score, mask) at each pruning layer before it decides (calibration), with
        the score the decision sees (PROTECT_BONUS added to protected tokens: `protected_now`)."""
        self.decisions = build_decisions(config, mode, temperature)
        self._protected: torch.Tensor | None = None
        self.cls_only = cls_only
        if cls_only and self.cls_only_refusal():
            raise ValueError(self.cls_only_refusal())

    def cls_only_refusal(self) -> str | None:
        """Why the CLS-only last layer cannot apply to this model, or None."""
        if self.head != "sequence":
            return f"a {self.head} head reads every position, not only CLS"
        if self.decision(self.num_layers - 1) is not None:
            return f"the last layer ({self.num_layers - 1}) prunes: its scores need every query row"
        if self.num_layers - 1 in self.observe_layers:
            return "the last layer's scores are observed"
        return None

    @property
    def protected_now(self) -> torch.Tensor | None:
        """[B,S'] bool over the tokens entering the current layer (drop mode: the kept ones): which are
        protected, or None; valid inside a forward (e.g. from a score_hook)."""
        return self._protected

    @property
    def pruning_layers(self) -> tuple[int, ...]:
        return tuple(int(layer) for layer in self.decisions)

    def decision(self, layer: int) -> Decision | None:
        return self.decisions[str(layer)] if str(layer) in self.decisions else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        gates: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
        protected: torch.Tensor | None = None,
    ) -> PrunedOutput:
        """`gates`: per pruning layer, the inputs of its soft decision for this forward (ToP's gate samples).
        `protected` ([B,S] bool, PyTorch only: the artifact has no such input): tokens whose score is
        raised by PROTECT_BONUS before every decision, e.g. a question's: the threshold rule keeps them
        all, the rank rules rank them first (within their budget). Without it, a config with
        protect "second_text" protects the tokens of token type 1 (exported too: the graph computes it
        from token_type_ids)."""
        self._gates = gates or {}
        if protected is None and self.config is not None and self.config.protect == "second_text":
            if token_type_ids is None:
                raise ValueError("this config protects the second text (protect 'second_text'): pass token_type_ids")
            protected = token_type_ids == 1
        self._protected = None if protected is None else (protected.bool() & (attention_mask > 0))
        mask = attention_mask.long()
        hidden = self.adapter.embed(input_ids, token_type_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(mask)
        positions = torch.where(mask == 1, positions, torch.full_like(positions, -1))
        kept: list[torch.Tensor] = []
        kept_index: list[torch.Tensor] = []
        self._scores: dict[int, torch.Tensor] = {}
        rows = mask_rows(mask, hidden.dtype)
        bias = mask_bias(rows)
        exporting = torch.onnx.is_in_onnx_export()
        soft_restore = self.head == "span" and self.mode in ("soft", "gate")
        restored = None
        if self.head == "span" and not soft_restore:
            restored = hidden.new_zeros(hidden.shape[0], input_ids.shape[1] + 1, hidden.shape[2])
        if soft_restore:  # expected restore: sum over layers of P(removed there) * the state entering it
            expected, alive = torch.zeros_like(hidden), mask.to(hidden.dtype)
        for index in range(self.num_layers):
            if restored is not None and self.decision(index) is not None:
                restored = _restore(restored, hidden, positions)
            if self.cls_only and index == self.num_layers - 1:
                hidden = self._cls_layer(index, hidden, bias)
                continue
            entering = hidden
            hidden, mask, positions, record, raw = self._layer(index, hidden, mask, rows, bias, positions)
            if soft_restore and record is not None:
                expected = expected + (alive * (1 - record)).unsqueeze(-1) * entering
                alive = alive * record
            if restored is not None and raw is None and self.decision(index) is not None:
                positions = torch.where(mask == 1, positions, torch.full_like(positions, -1))
            if raw is not None or (record is not None and self.mode in ("mask", "gate")):
                rows = mask_rows(mask, hidden.dtype)
                bias = mask_bias(rows)
            if raw is not None:
                kept_index.append(raw)
                if not exporting:  # the graph outputs kept_index only
                    record = _present(positions, int(input_ids.shape[1]), hidden.dtype)
            if record is not None and not exporting:
                kept.append(record)
        scores = None if self.mode == "drop" else self._scores
        if soft_restore:
            hidden = expected + alive.unsqueeze(-1) * hidden
            return PrunedOutput(self.adapter.span_head(hidden), tuple(kept), tuple(kept_index), scores)
        if restored is None:
            return PrunedOutput(self.adapter.head(hidden), tuple(kept), tuple(kept_index), scores)
        hidden = _restore(restored, hidden, positions)[:, :-1]
        return PrunedOutput(self.adapter.span_head(hidden), tuple(kept), tuple(kept_index), scores)

    def _layer(self, index, hidden, mask, rows, bias, positions):
        batch = hidden.shape[0]
        width = self.num_heads * self.head_dim  # static: no shape nodes in an exported graph
        decision = self.decision(index)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)

        projections = self.adapter.attention_projections(index)
        qkv = None
        if decision is not None or index in self.observe_layers:
            # A scoring layer projects Q, K and V with one packed matrix (one GEMM instead of three).
            weight = torch.cat([p.weight for p in projections])
            qkv = F.linear(hidden, weight, torch.cat([p.bias for p in projections]))
        record = raw = None
        if decision is not None and self.mode == "drop" and not self.training:
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
            if decision is None and index in self.observe_layers:
                normalizer = self.config.normalizer_constant() if self.config is not None else None
                self._scores[index] = importance_score(probs, mask, normalizer, rows)
            if decision is not None:
                score = importance_score(probs, mask, self.config.normalizer_constant(), rows)
        if decision is None:
            return self.adapter.finish_layer(index, context, hidden), mask, positions, record, raw
        self._scores[index] = score
        if self._protected is not None:
            score = score + self._protected.to(score.dtype) * PROTECT_BONUS
        if self.score_hook is not None:
            self.score_hook(index, score, mask)
        if decision.soft:
            weight = decision.weight(score, mask, self._gates.get(index))
            out = self.adapter.finish_layer(index, context, hidden) * weight.unsqueeze(-1).to(hidden.dtype)
            return out, mask * (weight > 0).long() if decision.masks_zeros else mask, positions, weight, raw
        if self.mode == "drop":
            pruned = decision.prune(torch.cat([context, hidden], dim=-1), score, mask)
            if self._protected is not None:
                kept_protected = torch.gather(self._protected, 1, pruned.kept_index.clamp(min=0))
                self._protected = kept_protected & (pruned.kept_index >= 0)
            context, hidden = pruned.hidden[..., :width], pruned.hidden[..., width:]
            mask, raw = pruned.mask, pruned.kept_index
            taken = torch.gather(positions, 1, pruned.kept_index.clamp(min=0))
            positions = torch.where(pruned.kept_index >= 0, taken, torch.full_like(taken, -1))
        else:
            mask = decision.keep(score, mask).long()
            record = mask.to(hidden.dtype)
        return self.adapter.finish_layer(index, context, hidden), mask, positions, record, raw

    def _cls_layer(self, index: int, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """The CLS-only last layer: [B,S,D] in, [B,1,D] out (the CLS row of the full layer's output)."""
        batch = hidden.shape[0]
        query, key, value = self.adapter.attention_projections(index)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)

        cls = hidden[:, :1]
        logits = torch.matmul(heads(query(cls)), heads(key(hidden)).transpose(-1, -2)) / math.sqrt(self.head_dim) + bias
        probs = self.adapter.attention_dropout(index)(torch.softmax(logits, dim=-1))
        context = torch.matmul(probs, heads(value(hidden))).transpose(1, 2).reshape(batch, 1, self.num_heads * self.head_dim)
        return self.adapter.finish_layer(index, context, cls)

    def thresholds(self) -> dict[int, float]:
        """Current threshold per pruning layer (the learned values in soft mode)."""
        return {int(layer): float(d.threshold.detach()) for layer, d in self.decisions.items() if hasattr(d, "threshold")}


def _restore(restored: torch.Tensor, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`restored` [B,S+1,D] with each present token's `hidden` [B,K,D] row written at its original
    position (`positions` [B,K]; -1, padding or a removed token, writes to the last column)."""
    slot = torch.where(positions >= 0, positions, torch.full_like(positions, restored.shape[1] - 1))
    return restored.scatter(1, slot.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]), hidden)


def _present(positions: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """[B,length]: 1 at the original positions listed in `positions` [B,K] (-1 ignored), else 0."""
    out = torch.zeros(positions.shape[0], length, dtype=dtype, device=positions.device)
    valid = positions >= 0
    rows = torch.arange(positions.shape[0], device=positions.device).unsqueeze(1).expand_as(positions)
    out[rows[valid], positions[valid]] = 1.0
    return out
