"""Graph passes on an exported graph; each returns the rewritten model and how often it fired.

- `ort_transformer_fusions`: onnxruntime's BERT optimizer (SkipLayerNormalization, BiasGelu,
  LayerNormalization, Attention, ...). It needs the scoring layers' softmax written as exp/sum
  (`PrunedEncoder(explicit_softmax=True)`; a Softmax with a second consumer, the score, makes the
  optimizer fail, DESIGN.md §4) and runs at opt_level 0 because the graph holds custom-domain nodes.
  The TokenPrune function and its opset import are carried over.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx

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


def _softmax_feeds_score(model: onnx.ModelProto) -> bool:
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    return any(node.op_type == "Softmax" and consumers.get(node.output[0], 0) > 1 for node in model.graph.node)


def ort_transformer_fusions(model: onnx.ModelProto, num_heads: int, hidden_size: int) -> tuple[onnx.ModelProto, PassReport]:
    """Apply onnxruntime's BERT fusions; report the fused-op counts (non-zero ones)."""
    from onnxruntime.transformers.optimizer import optimize_model

    if _softmax_feeds_score(model):
        raise PassError("a Softmax output feeds the importance score: export with explicit_softmax=True before fusing")
    with tempfile.TemporaryDirectory(prefix="tokprune-fuse-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        optimizer = optimize_model(str(path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
        counts = {k: int(v) for k, v in optimizer.get_fused_operator_statistics().items() if v}
        fused = optimizer.model
    have = {(f.domain, f.name) for f in fused.functions}
    fused.functions.extend(f for f in model.functions if (f.domain, f.name) not in have)
    if model.functions and not any(o.domain == OP_DOMAIN for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid(OP_DOMAIN, OP_VERSION))
    contrib = {n.domain for n in fused.graph.node} - {"", "ai.onnx", OP_DOMAIN}
    fused.opset_import.extend(onnx.helper.make_opsetid(d, 1) for d in sorted(contrib - {o.domain for o in fused.opset_import}))
    return fused, PassReport("ort_transformer_fusions", counts)
