"""ALBERT (`model_type` "albert"): one set of layer weights shared by every layer (per hidden group),
factorised embeddings projected up to the encoder width, a tanh pooler on the first row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from onnx_tokprune.architectures.base import ArchitectureSpec
from onnx_tokprune.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn


def _check(config: Any, where: str) -> None:
    inner = config.get("inner_group_num", 1) if isinstance(config, dict) else getattr(config, "inner_group_num", 1)
    if inner != 1:
        raise CheckpointError(
            f"{where}: ALBERT with inner_group_num {inner} is not supported (each of its num_hidden_layers steps runs "
            f"{inner} layers, so a pruning layer index would be ambiguous); released ALBERT checkpoints use 1"
        )


class AlbertAdapter:
    """Maps `AlbertForSequenceClassification` onto the pieces `PrunedEncoder` runs; layer i is the
    shared layer of its hidden group, as ALBERT's own forward picks it."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.base = model.albert
        cfg = model.config
        groups = self.base.encoder.albert_layer_groups
        per_group = cfg.num_hidden_layers / cfg.num_hidden_groups
        self.layers = [groups[int(i / per_group)].albert_layers[0] for i in range(cfg.num_hidden_layers)]

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        hidden = self.base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        return self.base.encoder.embedding_hidden_mapping_in(hidden)

    def attention_projections(self, index: int) -> tuple[nn.Module, nn.Module, nn.Module]:
        attention = self.layers[index].attention
        return attention.query, attention.key, attention.value

    def attention_dropout(self, index: int) -> nn.Module:
        return self.layers[index].attention.attention_dropout

    def finish_layer(self, index: int, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Output projection + residual LayerNorm, then the feed-forward block and its LayerNorm."""
        layer = self.layers[index]
        attention = layer.attention
        attn = attention.LayerNorm(residual + attention.output_dropout(attention.dense(context)))
        return layer.full_layer_layer_norm(layer.ff_chunk(attn) + attn)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """tanh pooler on the first row, dropout, classifier."""
        base = self.base
        pooled = base.pooler_activation(base.pooler(hidden[:, 0])) if base.pooler is not None else hidden[:, 0]
        return self.model.classifier(self.model.dropout(pooled))


SPEC = ArchitectureSpec(
    model_type="albert", adapter=AlbertAdapter, check=_check,
    # measured (onnxruntime 1.32): the fuser leaves a plain layer 0 of ALBERT unfused, in our export and
    # in the Hugging Face one alike (ELECTRA's layer 0, also after an embedding projection, fuses)
    layer0_attention_fuses=lambda config: False,
)
