"""What an architecture spec declares (optimum style: one declarative spec per `model_type`).

Everything the rest of the package needs to know about an architecture is here, so adding one is
one file in this package (a spec and its adapter) plus its tests. No torch at import time: the
runtime and the FLOPs model read specs too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from onnx_tokprune.artifact import MODEL_INPUTS


def _attribute(root: Any, path: str) -> Any:
    for name in path.split("."):
        root = getattr(root, name)
    return root


class EncoderAdapter:
    """Shows `PrunedEncoder` the pieces of an HF sequence classifier or QA model. A subclass names where
    they are (attribute paths) and writes what differs: `finish_layer` (output projection, residual
    LayerNorm, feed-forward) and `head`, and `embed` / `span_head` where they are not BERT's."""

    base_name = "bert"
    """The HF model's attribute holding the encoder."""
    layers_path = "encoder.layer"
    """Path from the encoder to its list of layers."""
    projections = ("attention.self.query", "attention.self.key", "attention.self.value")
    """Paths, within a layer, of the query, key and value projections."""
    dropout_path = "attention.self.dropout"
    """Path, within a layer, of the attention-probability dropout."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.base = getattr(model, self.base_name)
        self.layers = self.encoder_layers()

    def encoder_layers(self) -> list[Any]:
        """The module run at each layer index, in order."""
        return list(_attribute(self.base, self.layers_path))

    def embed(self, input_ids: Any, token_type_ids: Any) -> Any:
        return self.base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def attention_projections(self, index: int) -> tuple[Any, Any, Any]:
        layer = self.layers[index]
        return tuple(_attribute(layer, path) for path in self.projections)

    def attention_dropout(self, index: int) -> Any:
        return _attribute(self.layers[index], self.dropout_path)

    def finish_layer(self, index: int, context: Any, residual: Any) -> Any:
        raise NotImplementedError

    def head(self, hidden: Any) -> Any:
        raise NotImplementedError

    def span_head(self, hidden: Any) -> Any:
        """Start/end logits [B,S,2] of an HF *ForQuestionAnswering model from every position's final
        hidden state (BERT, RoBERTa, XLM-R, ELECTRA and ALBERT: one `qa_outputs` projection)."""
        return self.model.qa_outputs(hidden)


@dataclass(frozen=True)
class ConfigFields:
    """The names under which a Hugging Face config holds the encoder's shape."""

    hidden: str = "hidden_size"
    heads: str = "num_attention_heads"
    layers: str = "num_hidden_layers"
    intermediate: str = "intermediate_size"
    max_positions: str = "max_position_embeddings"
    vocab: str = "vocab_size"
    activation: str = "hidden_act"

    def get(self, config: Any, name: str, default: Any = None) -> Any:
        """The value of field `name` ("hidden", "heads", ...) in an HF config object or dict."""
        key = getattr(self, name)
        return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)

    def required(self) -> tuple[str, ...]:
        """The config keys that must be positive integers for the spec to describe the model."""
        return (self.layers, self.heads, self.hidden)


GELU_FUSIONS = {"gelu": "BiasGelu", "gelu_new": "FastGelu", "gelu_fast": "FastGelu", "gelu_pytorch_tanh": "FastGelu"}
"""The op onnxruntime's fuser makes of an FFN's bias + activation, by the config's activation name
(exact GELU -> BiasGelu, its tanh approximations -> FastGelu); other activations stay unfused."""


@dataclass(frozen=True)
class ArchitectureSpec:
    """One architecture: its inputs, config fields, the fuser it goes through, the fused-op counts
    `--optimize` must reach, and the adapter that shows `PrunedEncoder` its submodules."""

    model_type: str
    adapter: type
    """Class built from the HF sequence classifier: embed, attention_projections, attention_dropout,
    finish_layer, head (see architectures.bert.BertAdapter)."""
    inputs: tuple[str, ...] = MODEL_INPUTS
    """Graph inputs, a subset of artifact.MODEL_INPUTS starting with input_ids."""
    fields: ConfigFields = field(default_factory=ConfigFields)
    fuser_model_type: str = "bert"
    """onnxruntime.transformers.optimizer's model_type for this architecture's graphs."""
    embeddings_fuse: bool = True
    """Whether the embeddings fuse into one EmbedLayerNormalization (word + position 0..S-1 [+ type],
    LayerNorm): onnxruntime's fuser when layer 0 is plain, the embed_layer_norm_fusion rule when it scores."""
    layer0_attention_fuses: Callable[[Any], bool] = lambda config: True
    """Whether onnxruntime's fuser makes an Attention node of a plain (not scoring) layer 0 for this
    config (ALBERT: no, measured)."""
    check: Callable[[Any, str], None] | None = None
    """Raises CheckpointError (naming `where`) for a config of this model_type the adapter cannot run."""

    def expected_fusions(self, config: Any, scoring_layers: tuple[int, ...] = (), cls_only_last: bool = False) -> dict[str, int]:
        """The op counts a fully optimized graph of a model with this HF config holds: Attention on
        every layer that does not score (a scoring layer is one ScoredAttention node), both residual
        LayerNorms of every layer as SkipLayerNormalization (a plain layer 0 stays unfused where
        `layer0_attention_fuses` says so), every FFN's bias + GELU as BiasGelu or
        FastGelu (GELU_FUSIONS), the embeddings as one EmbedLayerNormalization where they fuse. A
        CLS-only last layer (one query row) has no Attention node."""
        num_layers = self.fields.get(config, "layers")
        scoring = len(set(scoring_layers))
        unfused = 0 if 0 in scoring_layers or self.layer0_attention_fuses(config) else 1
        counts = {
            "Attention": num_layers - scoring - unfused - int(cls_only_last),
            "SkipLayerNormalization": 2 * num_layers,
            "EmbedLayerNormalization": 1 if self.embeddings_fuse else 0,
        }
        gelu = GELU_FUSIONS.get(str(self.fields.get(config, "activation", "gelu")))
        if gelu is not None:
            counts[gelu] = num_layers
        if scoring:
            counts["ScoredAttention"] = scoring
        return counts
