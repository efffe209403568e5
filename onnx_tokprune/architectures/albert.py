"""ALBERT (`model_type` "albert"): one set of layer weights shared by every layer (per hidden group),
factorised embeddings projected up to the encoder width, a tanh pooler on the first row."""

from __future__ import annotations

from typing import Any

from onnx_tokprune.architectures.base import ArchitectureSpec, EncoderAdapter
from onnx_tokprune.errors import CheckpointError


def _check(config: Any, where: str) -> None:
    inner = config.get("inner_group_num", 1) if isinstance(config, dict) else getattr(config, "inner_group_num", 1)
    if inner != 1:
        raise CheckpointError(
            f"{where}: ALBERT with inner_group_num {inner} is not supported (each of its num_hidden_layers steps runs "
            f"{inner} layers, so a pruning layer index would be ambiguous); released ALBERT checkpoints use 1"
        )


class AlbertAdapter(EncoderAdapter):
    """`AlbertForSequenceClassification`; layer i is the shared layer of its hidden group, as ALBERT's
    own forward picks it."""

    base_name = "albert"
    projections = ("attention.query", "attention.key", "attention.value")
    dropout_path = "attention.attention_dropout"

    def encoder_layers(self):
        cfg = self.model.config
        groups = self.base.encoder.albert_layer_groups
        per_group = cfg.num_hidden_layers / cfg.num_hidden_groups
        return [groups[int(i / per_group)].albert_layers[0] for i in range(cfg.num_hidden_layers)]

    def embed(self, input_ids, token_type_ids):
        return self.base.encoder.embedding_hidden_mapping_in(super().embed(input_ids, token_type_ids))

    def finish_layer(self, index, context, residual):
        """Output projection + residual LayerNorm, then the feed-forward block and its LayerNorm."""
        layer = self.layers[index]
        attention = layer.attention
        attn = attention.LayerNorm(residual + attention.output_dropout(attention.dense(context)))
        return layer.full_layer_layer_norm(layer.ff_chunk(attn) + attn)

    def head(self, hidden):
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
