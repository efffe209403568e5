"""BERT (`model_type` "bert"; MiniLM and other BERT-layout checkpoints too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnx_tokprune.architectures.base import ArchitectureSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


class BertAdapter:
    """Maps `BertForSequenceClassification` onto the pieces `PrunedEncoder` runs."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.base = model.bert
        self.layers = list(self.base.encoder.layer)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def attention_projections(self, index: int) -> tuple[nn.Module, nn.Module, nn.Module]:
        sa = self.layers[index].attention.self
        return sa.query, sa.key, sa.value

    def attention_dropout(self, index: int) -> nn.Module:
        return self.layers[index].attention.self.dropout

    def finish_layer(self, index: int, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Output projection + residual LayerNorm, then the feed-forward block."""
        layer = self.layers[index]
        attn = layer.attention.output(context, residual)
        return layer.output(layer.intermediate(attn), attn)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Sequence-classification logits from the final hidden states (CLS row)."""
        pooled = self.base.pooler(hidden) if self.base.pooler is not None else hidden[:, 0]
        return self.model.classifier(self.model.dropout(pooled))


SPEC = ArchitectureSpec(model_type="bert", adapter=BertAdapter)
