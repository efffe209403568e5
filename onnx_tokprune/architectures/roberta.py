"""RoBERTa (`model_type` "roberta"; also I-BERT checkpoints imported from LTP): BERT's layer layout,
no pooler, positions counted from the padding index (so the embeddings do not fuse)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnx_tokprune.architectures.base import ArchitectureSpec
from onnx_tokprune.architectures.bert import BertAdapter

if TYPE_CHECKING:
    import torch
    from torch import nn


class RobertaAdapter(BertAdapter):
    """Maps `RobertaForSequenceClassification` onto the pieces `PrunedEncoder` runs."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.base = model.roberta
        self.layers = list(self.base.encoder.layer)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The classification head reads the first (<s>) row: dense, tanh, projection."""
        return self.model.classifier(hidden)


SPEC = ArchitectureSpec(model_type="roberta", adapter=RobertaAdapter, embeddings_fuse=False)
