"""Self-attention of a scoring layer plus the importance score it yields, as one op (docs/design.md §2).

A pruning layer needs the attention probabilities twice: for its context and for the score that
TokenPrune reads. onnxruntime's fused Attention op does not output them, so in an exported graph this
part of the layer is one `tokprune::ScoredAttention` node: the compiled kernel (custom_ops/) computes
it in one pass, and the ONNX function the model carries (export/op.py) computes it with standard ops
when no kernel is registered.

Inputs: qkv f32[B,S,3D] (the packed Q|K|V projection, bias added), mask i64[B,S] (1 = kept).
Attributes: num_heads (int), normalizer (float: the fixed N of the score, 0 for the kept count of the row).
Outputs: context f32[B,S,D] (heads concatenated), score f32[B,S] (`scoring.importance_score`).
"""

from __future__ import annotations

import math

import torch

from onnx_tokprune.scoring import OP_DOMAIN, importance_score

ATTENTION_OP_NAME = "ScoredAttention"


def mask_rows(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B,S] 0/1 -> [B,1,1,S] in `dtype`: the kept rows of the score and the source of the bias."""
    return mask[:, None, None, :].to(dtype)


def mask_bias(rows: torch.Tensor) -> torch.Tensor:
    """[B,1,1,S] 0/1 rows -> additive attention mask whose exp underflows to exactly 0."""
    return (1.0 - rows) * torch.finfo(rows.dtype).min


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B,S,3D] packed projection -> q, k, v, each [B,H,S,D/H] (one Reshape + Transpose + Split)."""
    batch, _, width3 = qkv.shape
    head_dim = int(width3) // (3 * num_heads)  # static: no shape nodes in an exported graph
    q, k, v = qkv.view(batch, -1, 3 * num_heads, head_dim).transpose(1, 2).split(num_heads, dim=1)
    return q, k, v


def scored_attention_reference(
    qkv: torch.Tensor, mask: torch.Tensor, num_heads: int, normalizer: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The op in PyTorch: softmax(q k^T / sqrt(d) + mask bias) v, and the score of those probabilities."""
    q, k, v = split_heads(qkv, num_heads)
    rows = mask_rows(mask, qkv.dtype)
    probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + mask_bias(rows), dim=-1)
    context = torch.matmul(probs, v).transpose(1, 2).reshape(qkv.shape[0], -1, qkv.shape[-1] // 3)
    return context, importance_score(probs, mask, normalizer, rows)


class ScoredAttentionFunction(torch.autograd.Function):
    """ScoredAttention as one custom ONNX node under the legacy (TorchScript) exporter."""

    @staticmethod
    def forward(ctx, qkv, mask, num_heads, normalizer):  # noqa: D102
        return scored_attention_reference(qkv, mask, num_heads, normalizer)

    @staticmethod
    def symbolic(g, qkv, mask, num_heads, normalizer):  # noqa: D102
        context, score = g.op(
            f"{OP_DOMAIN}::{ATTENTION_OP_NAME}", qkv, mask, num_heads_i=num_heads, normalizer_f=normalizer or 0.0, outputs=2
        )
        dims = qkv.type().varyingSizes() or [None, None, None]
        width = dims[-1] // 3 if dims[-1] is not None else None
        context.setType(qkv.type().with_sizes([None, None, width]))
        score.setType(qkv.type().with_sizes([None, None]))
        return context, score


def scored_attention(
    qkv: torch.Tensor, mask: torch.Tensor, num_heads: int, normalizer: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(context [B,S,D], score [B,S]): the reference in eager mode, one `tokprune::ScoredAttention`
    node under ONNX export."""
    if torch.onnx.is_in_onnx_export():
        return ScoredAttentionFunction.apply(qkv, mask, num_heads, normalizer)
    return scored_attention_reference(qkv, mask, num_heads, normalizer)
