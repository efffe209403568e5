"""DistilBERT (`model_type` "distilbert"): no token types, its own module and config names."""

from __future__ import annotations

from onnx_tokprune.architectures.base import ArchitectureSpec, ConfigFields, EncoderAdapter


class DistilBertAdapter(EncoderAdapter):
    """`DistilBertForSequenceClassification`."""

    base_name = "distilbert"
    layers_path = "transformer.layer"
    projections = ("attention.q_lin", "attention.k_lin", "attention.v_lin")
    dropout_path = "attention.dropout"

    def embed(self, input_ids, token_type_ids):
        return self.base.embeddings(input_ids)

    def finish_layer(self, index, context, residual):
        """Output projection + residual LayerNorm, then the feed-forward block and its LayerNorm."""
        layer = self.layers[index]
        attn = layer.sa_layer_norm(layer.attention.out_lin(context) + residual)
        return layer.output_layer_norm(layer.ffn(attn) + attn)

    def head(self, hidden):
        """pre_classifier, ReLU, dropout, classifier on the first ([CLS]) row."""
        pooled = self.model.pre_classifier(hidden[:, 0]).relu()
        return self.model.classifier(self.model.dropout(pooled))

    def span_head(self, hidden):
        """DistilBertForQuestionAnswering: dropout, then the start/end projection."""
        return self.model.qa_outputs(self.model.dropout(hidden))


SPEC = ArchitectureSpec(
    model_type="distilbert",
    adapter=DistilBertAdapter,
    inputs=("input_ids", "attention_mask"),
    fields=ConfigFields(hidden="dim", heads="n_heads", layers="n_layers", intermediate="hidden_dim", activation="activation"),
)
