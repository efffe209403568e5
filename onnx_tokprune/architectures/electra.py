"""ELECTRA discriminators (`model_type` "electra"): BERT's layer layout, embeddings that may be
narrower than the encoder (projected up), a classification head on the first row."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnx_tokprune.architectures.base import ArchitectureSpec
from onnx_tokprune.architectures.bert import BertAdapter

if TYPE_CHECKING:
    import torch
    from torch import nn


class ElectraAdapter(BertAdapter):
    """Maps `ElectraForSequenceClassification` onto the pieces `PrunedEncoder` runs."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.base = model.electra
        self.layers = list(self.base.encoder.layer)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        hidden = self.base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        project = getattr(self.base, "embeddings_project", None)
        return project(hidden) if project is not None else hidden

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """dense, GELU, projection on the first row (ElectraClassificationHead)."""
        return self.model.classifier(hidden)


SPEC = ArchitectureSpec(model_type="electra", adapter=ElectraAdapter)
