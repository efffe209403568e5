"""XLM-RoBERTa (`model_type` "xlm-roberta"): RoBERTa's modules and positions under another name."""

from __future__ import annotations

from onnx_tokprune.architectures.base import ArchitectureSpec
from onnx_tokprune.architectures.roberta import RobertaAdapter

SPEC = ArchitectureSpec(model_type="xlm-roberta", adapter=RobertaAdapter, embeddings_fuse=False)
