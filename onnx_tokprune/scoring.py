"""Importance score and the TokenPrune decision in PyTorch (docs/design.md §2, §3).

This is the reference every other implementation (ONNX function, C++ kernel) is held equal to.
All three decision rules are one formula; a rule's unused parameters are neutral:

    keep[b, j] = CLS(j) or ( valid[b, j]                      # kept so far, not CLS
                             and score[b, j] >= threshold
                             and bin_mask[floor(rank * B / n)] == 1
                             and rank < ceil(keep_ratio * n * (1 - 1e-6)) )

with `rank` the position of j among the n valid tokens of row b sorted by descending score
(ties to the lower position) and B = len(bin_mask).

`bin_rounding="top"` replaces the exact integer bin with the float32 expression of ToP's released
code, `int(rank / (n + 1e-6) * B)`, which lands one bin lower wherever rank * B / n is a whole
number (compatibility mode for imported ToP checkpoints, docs/design.md §2).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from onnx_tokprune.config import BIN_ROUNDINGS

OP_DOMAIN = "tokprune"
OP_NAME = "TokenPrune"
OP_VERSION = 1
TOP_K_SHRINK = 1 - 1e-6
"""top-k keeps ceil(keep_ratio * n * (1 - 1e-6)) in float32: without the shrink float32(0.15) * 100 =
15.000001 would keep 16 tokens where the user asked for 15% of 100; exact products stay exact."""


def importance_score(
    probs: torch.Tensor, mask: torch.Tensor, normalizer: float | None, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """s[b,j] = 1/(H*N) * sum_h sum_{i kept} A[b,h,i,j], in fp32.

    `probs` is [B,H,S,S] (query i, key j), `mask` [B,S] with 1 for kept tokens. `normalizer` is the
    fixed N, or None for N = number of kept tokens of the row. `rows` may pass the float mask already
    shaped [B,1,1,S] (the encoder shares it with the attention bias: fewer graph nodes).
    """
    probs = probs.float()
    if rows is None:
        rows = mask.to(probs.dtype)[:, None, None, :]
    total = torch.matmul(rows.float(), probs).sum(dim=(1, 2))
    heads = int(probs.shape[1])  # static: no shape nodes in an exported graph
    if normalizer is None:
        return total / (mask.to(probs.dtype).sum(dim=1, keepdim=True) * heads)
    return total * (1.0 / (heads * normalizer))


class PruneResult(NamedTuple):
    hidden: torch.Tensor
    mask: torch.Tensor
    kept_index: torch.Tensor


class Ranks(NamedTuple):
    is_cls: torch.Tensor
    valid: torch.Tensor
    rank: torch.Tensor
    count: torch.Tensor


def rank_valid(score: torch.Tensor, mask: torch.Tensor) -> Ranks:
    """Rank of each valid (kept, non-CLS) token by descending score, ties to the lower position."""
    seq = score.shape[1]
    pos = torch.arange(seq, device=score.device)
    is_cls = (pos == 0).unsqueeze(0)
    valid = (mask == 1) & ~is_cls
    ranked = torch.where(valid, score.detach(), torch.full_like(score, float("-inf")))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, pos.expand_as(order).contiguous())
    return Ranks(is_cls, valid, rank, valid.sum(dim=1, keepdim=True))


def rank_bin(rank: torch.Tensor, count: torch.Tensor, nbins: int, bin_rounding: str = "exact") -> torch.Tensor:
    """The rank bin of each token: floor(rank * B / n) exactly, or ToP's float32 expression."""
    if bin_rounding == "top":
        q = (rank.float() / (count.float() + 1e-6)).clamp(0.0, 1.0) * nbins
        return torch.clamp(torch.floor(q).long(), max=nbins - 1)
    if bin_rounding != "exact":
        raise ValueError(f"bin_rounding must be one of {BIN_ROUNDINGS}, got {bin_rounding!r}")
    return torch.clamp(torch.div(rank * nbins, torch.clamp(count, min=1), rounding_mode="floor"), max=nbins - 1)


def keep_decision(
    score: torch.Tensor,
    mask: torch.Tensor,
    threshold: torch.Tensor,
    bin_mask: torch.Tensor,
    keep_ratio: torch.Tensor,
    bin_rounding: str = "exact",
) -> torch.Tensor:
    """The boolean keep matrix [B,S] of the unified rule (module docstring)."""
    r = rank_valid(score, mask)
    bins = rank_bin(r.rank, r.count, bin_mask.shape[0], bin_rounding)
    k = torch.ceil(keep_ratio.float() * r.count.float() * TOP_K_SHRINK).long()
    keep = r.valid & (score >= threshold) & (bin_mask[bins] == 1) & (r.rank < k)
    return keep | (r.is_cls & (mask == 1))


def soft_rank_bins_keep(score: torch.Tensor, mask: torch.Tensor, bin_gates: torch.Tensor, layer_gate: torch.Tensor) -> torch.Tensor:
    """ToP's training-time decision [B,S] in [0, 1]: each valid token takes its rank bin's gate value,
    1 - (1 - bin gate) * layer gate, where the layer gate is binarised straight-through (forward 0/1,
    gradient of the sample). CLS keeps 1; removed tokens and padding 0. Ranks do not carry gradient."""
    r = rank_valid(score, mask)
    bins = rank_bin(r.rank, r.count, bin_gates.shape[0])
    hard = (layer_gate > 0).to(layer_gate.dtype)
    layer = hard + layer_gate - layer_gate.detach()
    keep = (1 - (1 - bin_gates[bins]) * layer) * r.valid.to(bin_gates.dtype)
    return torch.where(r.is_cls, (mask == 1).to(keep.dtype), keep)


def compact(hidden: torch.Tensor, keep: torch.Tensor) -> PruneResult:
    """Pack kept rows to the left in their original order; pad to the batch's largest count."""
    seq = keep.shape[1]
    pos = torch.arange(seq, device=keep.device).expand_as(keep)
    sort_key = torch.where(keep, pos, pos + seq)
    kmax = keep.sum(dim=1).max()
    key, idx = torch.topk(sort_key, int(kmax), dim=1, largest=False, sorted=True)
    new_mask = (key < seq).long()
    kept_index = torch.where(key < seq, idx, torch.full_like(idx, -1))
    gathered = torch.gather(hidden, 1, idx.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    return PruneResult(torch.where(new_mask.bool().unsqueeze(-1), gathered, 0.0), new_mask, kept_index)


def token_prune_reference(
    hidden: torch.Tensor,
    score: torch.Tensor,
    mask: torch.Tensor,
    threshold: torch.Tensor,
    bin_mask: torch.Tensor,
    keep_ratio: torch.Tensor,
    bin_rounding: str = "exact",
) -> PruneResult:
    """TokenPrune in PyTorch: hidden [B,S,D], score [B,S], mask i64 [B,S] -> [B,K,D], [B,K], [B,K]."""
    return compact(hidden, keep_decision(score, mask, threshold, bin_mask, keep_ratio, bin_rounding))


class TokenPruneFunction(torch.autograd.Function):
    """TokenPrune as one custom ONNX node under the legacy (TorchScript) exporter."""

    @staticmethod
    def forward(ctx, hidden, score, mask, threshold, bin_mask, keep_ratio, bin_rounding="exact"):  # noqa: D102
        return tuple(token_prune_reference(hidden, score, mask, threshold, bin_mask, keep_ratio, bin_rounding))

    @staticmethod
    def symbolic(g, hidden, score, mask, threshold, bin_mask, keep_ratio, bin_rounding="exact"):  # noqa: D102
        attrs = {} if bin_rounding == "exact" else {"bin_rounding_s": bin_rounding}
        out_hidden, out_mask, kept = g.op(
            f"{OP_DOMAIN}::{OP_NAME}", hidden, score, mask, threshold, bin_mask, keep_ratio, outputs=3, **attrs
        )
        dims = hidden.type().varyingSizes() or [None, None, None]
        out_hidden.setType(hidden.type().with_sizes([None, None, dims[-1]]))
        out_mask.setType(mask.type().with_sizes([None, None]))
        kept.setType(mask.type().with_sizes([None, None]))
        return out_hidden, out_mask, kept


def token_prune(
    hidden: torch.Tensor,
    score: torch.Tensor,
    mask: torch.Tensor,
    threshold: torch.Tensor,
    bin_mask: torch.Tensor,
    keep_ratio: torch.Tensor,
    bin_rounding: str = "exact",
) -> PruneResult:
    """TokenPrune: the reference in eager mode, one `tokprune::TokenPrune` node under ONNX export
    (with a `bin_rounding="top"` attribute in ToP compatibility mode)."""
    if torch.onnx.is_in_onnx_export():
        return PruneResult(*TokenPruneFunction.apply(hidden, score, mask, threshold, bin_mask, keep_ratio, bin_rounding))
    return token_prune_reference(hidden, score, mask, threshold, bin_mask, keep_ratio, bin_rounding)
