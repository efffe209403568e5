"""Graph passes on an exported graph; each returns the rewritten model and how often it fired.

- `ort_transformer_fusions`: onnxruntime's BERT optimizer (EmbedLayerNormalization, Attention,
  SkipLayerNormalization, BiasGelu, ...). Layers that do not score fuse to Attention; a scoring
  layer's attention is one `tokprune::ScoredAttention` node (it also yields the score, DESIGN.md §4),
  which the fuser leaves alone: the pass checks that every one survived. It runs at opt_level 0
  because the graph holds custom-domain nodes; the model's functions and their opset import are
  carried over.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from onnx_tokprune.scored_attention import ATTENTION_OP_NAME
from onnx_tokprune.scoring import OP_DOMAIN, OP_VERSION


class PassError(ValueError):
    """A pass cannot run on this graph; the message says what to do."""


@dataclass
class PassReport:
    """What a pass did: its name and, per rewritten op type, how many nodes it produced."""

    name: str
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "counts": dict(self.counts)}


def _scored_attention_nodes(model: onnx.ModelProto) -> list[tuple[str, ...]]:
    """The outputs of every ScoredAttention node (the scoring layers' attention and score)."""
    return [tuple(n.output) for n in model.graph.node if n.domain == OP_DOMAIN and n.op_type == ATTENTION_OP_NAME]


def ort_transformer_fusions(model: onnx.ModelProto, num_heads: int, hidden_size: int) -> tuple[onnx.ModelProto, PassReport]:
    """Apply onnxruntime's BERT fusions; report the fused-op counts (non-zero ones)."""
    from onnxruntime.transformers.optimizer import optimize_model

    scoring = _scored_attention_nodes(model)
    with tempfile.TemporaryDirectory(prefix="tokprune-fuse-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        optimizer = optimize_model(str(path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
        counts = {k: int(v) for k, v in optimizer.get_fused_operator_statistics().items() if v}
        fused = optimizer.model
    if _scored_attention_nodes(fused) != scoring:
        raise PassError("onnxruntime's fuser changed a scoring layer's ScoredAttention node: export without --optimize")
    have = {(f.domain, f.name) for f in fused.functions}
    fused.functions.extend(f for f in model.functions if (f.domain, f.name) not in have)
    if model.functions and not any(o.domain == OP_DOMAIN for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid(OP_DOMAIN, OP_VERSION))
    contrib = {n.domain for n in fused.graph.node} - {"", "ai.onnx", OP_DOMAIN}
    fused.opset_import.extend(onnx.helper.make_opsetid(d, 1) for d in sorted(contrib - {o.domain for o in fused.opset_import}))
    return fused, PassReport("ort_transformer_fusions", counts)
