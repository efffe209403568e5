"""RoBERTa (`model_type` "roberta"; also I-BERT checkpoints imported from LTP): BERT's layer layout,
no pooler, positions counted from the padding index (so the embeddings do not fuse)."""

from __future__ import annotations

from onnx_tokprune.architectures.base import ArchitectureSpec
from onnx_tokprune.architectures.bert import BertAdapter


class RobertaAdapter(BertAdapter):
    """`RobertaForSequenceClassification`."""

    base_name = "roberta"

    def head(self, hidden):
        """The classification head reads the first (<s>) row: dense, tanh, projection."""
        return self.model.classifier(hidden)


SPEC = ArchitectureSpec(model_type="roberta", adapter=RobertaAdapter, embeddings_fuse=False)
