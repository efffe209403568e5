"""BERT (`model_type` "bert"; MiniLM and other BERT-layout checkpoints too)."""

from __future__ import annotations

from onnx_tokprune.architectures.base import ArchitectureSpec, EncoderAdapter


class BertAdapter(EncoderAdapter):
    """`BertForSequenceClassification`: the base class's paths are BERT's."""

    def finish_layer(self, index, context, residual):
        """Output projection + residual LayerNorm, then the feed-forward block."""
        layer = self.layers[index]
        attn = layer.attention.output(context, residual)
        return layer.output(layer.intermediate(attn), attn)

    def head(self, hidden):
        """Sequence-classification logits from the final hidden states (CLS row)."""
        pooled = self.base.pooler(hidden) if self.base.pooler is not None else hidden[:, 0]
        return self.model.classifier(self.model.dropout(pooled))


SPEC = ArchitectureSpec(model_type="bert", adapter=BertAdapter)
