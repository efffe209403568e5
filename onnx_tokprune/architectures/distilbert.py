"""DistilBERT (`model_type` "distilbert"): no token types, its own module and config names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnx_tokprune.architectures.base import ArchitectureSpec, ConfigFields

if TYPE_CHECKING:
    import torch
    from torch import nn


class DistilBertAdapter:
    """Maps `DistilBertForSequenceClassification` onto the pieces `PrunedEncoder` runs."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.base = model.distilbert
        self.layers = list(self.base.transformer.layer)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.base.embeddings(input_ids)

    def attention_projections(self, index: int) -> tuple[nn.Module, nn.Module, nn.Module]:
        attention = self.layers[index].attention
        return attention.q_lin, attention.k_lin, attention.v_lin

    def attention_dropout(self, index: int) -> nn.Module:
        return self.layers[index].attention.dropout

    def finish_layer(self, index: int, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Output projection + residual LayerNorm, then the feed-forward block and its LayerNorm."""
        layer = self.layers[index]
        attn = layer.sa_layer_norm(layer.attention.out_lin(context) + residual)
        return layer.output_layer_norm(layer.ffn(attn) + attn)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """pre_classifier, ReLU, dropout, classifier on the first ([CLS]) row."""
        import torch

        pooled = torch.relu(self.model.pre_classifier(hidden[:, 0]))
        return self.model.classifier(self.model.dropout(pooled))


SPEC = ArchitectureSpec(
    model_type="distilbert",
    adapter=DistilBertAdapter,
    inputs=("input_ids", "attention_mask"),
    fields=ConfigFields(hidden="dim", heads="n_heads", layers="n_layers", intermediate="hidden_dim", activation="activation"),
)
