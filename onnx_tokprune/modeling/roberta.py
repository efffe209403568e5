"""RoBERTa adapter (also I-BERT checkpoints imported from LTP): BERT's layer layout, no pooler."""

from __future__ import annotations

import torch
from torch import nn

from onnx_tokprune.modeling.bert import BertAdapter


class RobertaAdapter(BertAdapter):
    """Maps `RobertaForSequenceClassification` onto the pieces `PrunedEncoder` runs."""

    model_types = ("roberta",)

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.base = model.roberta
        self.layers = list(self.base.encoder.layer)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The classification head reads the first (<s>) row: dense, tanh, projection."""
        return self.model.classifier(hidden)
