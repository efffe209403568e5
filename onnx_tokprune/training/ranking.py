"""ToP's ranking distillation: early student layers learn the teacher's final-layer token ranking.

The loss is LambdaLoss's ARP-2 (Wang et al. 2018, as `pytorchltr.loss.LambdaARPLoss2`, which ToP's
code calls): over the teacher's top-K tokens with relevance K..1 by teacher rank,

    l = sum_{i, j: y_i > y_j} (y_i - y_j) * log2(1 + exp(-sigma * (s_i - s_j)))

divided by K^2 and averaged over the batch (as ToP does). Hand-written: pytorchltr is an
unmaintained compiled package and the loss is a few lines.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def lambda_arp2(scores: torch.Tensor, relevance: torch.Tensor, valid: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """ARP-2 loss per list: scores, relevance [B,K] (higher = more relevant), valid [B,K] bool."""
    s_diff = scores[:, :, None] - scores[:, None, :]
    r_diff = relevance[:, :, None] - relevance[:, None, :]
    pairs = valid[:, :, None] & valid[:, None, :] & (r_diff > 0)
    loss = r_diff * F.softplus(-sigma * s_diff) / math.log(2.0)
    return torch.where(pairs, loss, torch.zeros_like(loss)).sum(dim=(1, 2))


def rank_distillation_loss(
    student_score: torch.Tensor, teacher_score: torch.Tensor, attention_mask: torch.Tensor, top_k: int = 20, sigma: float = 1.0
) -> torch.Tensor:
    """Mean ARP-2 loss / K^2 of the student's scores on the teacher's top-K non-CLS input tokens.

    Scores are [B,S] over the input positions; `attention_mask` [B,S] marks real tokens. Rows with
    fewer than K real tokens use the ones they have.
    """
    seq = teacher_score.shape[1]
    valid = attention_mask.bool().clone()
    valid[:, 0] = False
    k = max(1, min(top_k, seq - 1))
    ranked = torch.where(valid, teacher_score.detach(), torch.full_like(teacher_score, float("-inf")))
    top_scores, index = torch.topk(ranked, k, dim=1, largest=True, sorted=True)
    chosen_valid = torch.isfinite(top_scores)
    relevance = torch.arange(k, 0, -1, device=teacher_score.device, dtype=student_score.dtype).expand(index.shape[0], k)
    chosen = torch.gather(student_score, 1, index)
    return (lambda_arp2(chosen, relevance, chosen_valid, sigma) / (k * k)).mean()
