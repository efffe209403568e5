"""Analytic FLOPs of a (pruned) BERT-style encoder, counted from tokens per layer.

A layer with `n_in` tokens entering and `n_out` leaving after its attention (docs/design.md §2: removed
tokens leave before the output projection and the FFN) costs, in FLOPs (2 per multiply-add):

    QKV 6*n_in*D^2 + scores and context 4*n_in^2*D + output projection 2*n_out*D^2 + FFN 4*n_out*D*I

A pruning layer also scores its tokens (the kept-row sum of the attention probabilities, one
[1,S]x[S,S] product per head): 2*H*n_in^2. The pooler and classifier add 2*D^2 + 2*D*C; a span
(QA) head instead projects every input position, restored ones included, to start/end: 2*D*2*S.
A CLS-only last layer (`cls_only_last`) projects the query of one row and keys and values of all n:
2*D^2*(1 + 2n) + 4*n*D + 2*D^2 + 4*D*I. Embedding
lookups, LayerNorm, softmax and GELU are left out (a few percent at these shapes, identical in both
models being compared). These are exactly the matrix products `torch.utils.flop_counter` counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderShape:
    hidden: int
    intermediate: int
    layers: int
    labels: int
    heads: int
    head: str = "sequence"
    """artifact.HEAD_CLASSES kind: "sequence" (pooler + classifier) or "span" (start/end at every position)."""
    cls_only_last: bool = False
    """The last layer runs for the CLS row only (module docstring)."""

    @classmethod
    def from_hf(cls, config, cls_only_last: bool = False) -> EncoderShape:
        """The shape of an HF config (object or config.json dict), read through its architecture's field names."""
        from onnx_tokprune.architectures import spec_for

        fields = spec_for(config).fields
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        from onnx_tokprune.artifact import head_kind

        labels = get("num_labels") or len(get("id2label") or {}) or 2
        head = head_kind(get("architectures")) or "sequence"
        return cls(*(fields.get(config, name) for name in ("hidden", "intermediate", "layers")), labels, fields.get(config, "heads"), head, cls_only_last)

    def layer_flops(self, n_in, n_out, scoring=False):
        """FLOPs of one layer (module docstring); `scoring` may be a probability (expected FLOPs).
        Works on numbers and on tensors alike."""
        d, i = self.hidden, self.intermediate
        score = 0 if scoring is False or scoring is None else 2 * self.heads * n_in * n_in * scoring
        return 6 * n_in * d * d + 4 * n_in * n_in * d + 2 * n_out * d * d + 4 * n_out * d * i + score

    def head_flops(self, length=1):
        """The head's FLOPs on an input of `length` tokens (module docstring)."""
        if self.head == "span":
            return 2 * self.hidden * 2 * length
        return 2 * self.hidden * self.hidden + 2 * self.hidden * self.labels

    def flops(self, length, kept: dict[int, float] | None = None):
        """FLOPs of one input of `length` tokens (a number or a tensor of lengths); `kept[l]` = tokens
        left after pruning layer l."""
        total, n = self.head_flops(length), length
        for layer in range(self.layers):
            if self.cls_only_last and layer == self.layers - 1:
                d = self.hidden
                total += 2 * d * d * (1 + 2 * n) + 4 * n * d + 2 * d * d + 4 * d * self.intermediate
                break
            n_out = kept.get(layer, n) if kept else n
            total += self.layer_flops(n, n_out, scoring=bool(kept) and layer in kept)
            n = n_out
        return total

    def expected_flops(self, length, expected: dict):
        """Expected FLOPs of an input of `length` tokens (a number or a tensor of lengths) when pruning
        layer l, with probability prob_l, keeps an expected fraction keep_l of the non-CLS tokens
        reaching it: `expected[l] = (keep_l, prob_l)` (numbers or tensors; the gradient flows through
        them). CLS is always kept; a layer that does not prune does not score."""
        total, fraction = self.head_flops(length), 1.0
        for layer in range(self.layers):
            n_in = (length - 1) * fraction + 1
            if layer in expected:
                keep, prob = expected[layer]
                fraction = fraction * (1 - (1 - keep) * prob)
                total = total + self.layer_flops(n_in, (length - 1) * fraction + 1, scoring=prob)
            else:
                total = total + self.layer_flops(n_in, n_in)
        return total

    def equivalent_length(self, flops: float) -> float:
        """The unpruned input length whose FLOPs equal `flops` (the removal-efficiency oracle)."""
        lo, hi = 0.0, 1.0
        while self.flops(hi) < flops:
            hi *= 2
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.flops(mid) < flops else (lo, mid)
        return (lo + hi) / 2


def relative_flops(shape: EncoderShape, lengths: Sequence[int], kept: Sequence[dict[int, float]]) -> float:
    """Total pruned FLOPs / total unpruned FLOPs over a set of inputs."""
    pruned = sum(shape.flops(n, k) for n, k in zip(lengths, kept))
    return pruned / sum(shape.flops(n) for n in lengths)


def pruning_floor(shape: EncoderShape, lengths: Sequence[int], first_layer: int) -> float:
    """The least relative FLOPs of pruning that starts at `first_layer`: every layer before it whole, its
    QKV and attention on every token, and only [CLS] left after its attention."""
    return relative_flops(shape, lengths, [{layer: 1 for layer in range(first_layer, shape.layers)} for _ in lengths])
