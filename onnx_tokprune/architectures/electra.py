"""ELECTRA discriminators (`model_type` "electra"): BERT's layer layout, embeddings that may be
narrower than the encoder (projected up), a classification head on the first row."""

from __future__ import annotations

from onnx_tokprune.architectures.base import ArchitectureSpec
from onnx_tokprune.architectures.roberta import RobertaAdapter


class ElectraAdapter(RobertaAdapter):
    """`ElectraForSequenceClassification`: its head, like RoBERTa's, reads the first row itself
    (dense, GELU, projection)."""

    base_name = "electra"

    def embed(self, input_ids, token_type_ids):
        hidden = super().embed(input_ids, token_type_ids)
        project = getattr(self.base, "embeddings_project", None)
        return project(hidden) if project is not None else hidden


SPEC = ArchitectureSpec(model_type="electra", adapter=ElectraAdapter)
