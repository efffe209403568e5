"""Logit distillation from a frozen teacher (the fine-tuned checkpoint a pruning run starts from).

ToP always distils (training.top); LTP does with `LTPSettings.distill` (the lever the LTP paper leaves
out: its loss is the task loss alone). One loss for both, so a recipe means the same thing in either.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from onnx_tokprune.training.qa import span_loss


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels, temperature: float, ce_weight: float) -> torch.Tensor:
    """KL(teacher || student) at `temperature` (scaled by T^2) + ce_weight * CE; MSE for regression.
    Span logits ([B,S,2], `labels` = (start, end) positions): the mean of the start and end
    distributions' KL over positions, + ce_weight * the span loss."""
    if student.dim() == 3:
        flat_student = student.transpose(1, 2).reshape(-1, student.shape[1])
        flat_teacher = teacher.transpose(1, 2).reshape(-1, teacher.shape[1])
        kd = F.kl_div(F.log_softmax(flat_student / temperature, -1), F.softmax(flat_teacher / temperature, -1), reduction="batchmean")
        loss = kd * temperature**2
        if ce_weight:
            loss = loss + ce_weight * span_loss(student[..., 0], student[..., 1], *labels)
        return loss
    if student.shape[-1] == 1:
        return F.mse_loss(student.squeeze(-1), labels.float())
    kd = F.kl_div(F.log_softmax(student / temperature, -1), F.softmax(teacher / temperature, -1), reduction="batchmean")
    loss = kd * temperature**2
    if ce_weight:
        loss = loss + ce_weight * F.cross_entropy(student, labels.long())
    return loss


def targets(labels, start_positions, end_positions):
    """The training targets of a batch: class labels, or (start, end) positions of a span head."""
    return (start_positions, end_positions) if start_positions is not None else labels


class FrozenTeacher(nn.Module):
    """Base of a distilling objective: a frozen teacher kept in eval mode whatever the Trainer sets."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher
        for p in teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self


class DistilledObjective(FrozenTeacher):
    """distillation_loss of a PrunedEncoder student against the teacher, plus an optional extra term
    `extra(output, attention_mask)` (LTP's mask regulariser): the distilling counterpart of the task
    objectives (training.common.ClassifierObjective, training.qa.SpanObjective)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, temperature: float, ce_weight: float, extra=None) -> None:
        super().__init__(teacher)
        self.student = student
        self.temperature, self.ce_weight, self.extra = temperature, ce_weight, extra

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, start_positions=None, end_positions=None):
        out = self.student(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        result = {"logits": out.logits}
        labels = targets(labels, start_positions, end_positions)
        if labels is not None:
            with torch.no_grad():
                teacher = self.teacher(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            loss = distillation_loss(out.logits, teacher.logits, labels, self.temperature, self.ce_weight)
            if self.extra is not None:
                loss = loss + self.extra(out, attention_mask)
            result["loss"] = loss
        return result
