"""Graph passes on an exported graph; each returns the rewritten model and how often it fired.

- `ort_transformer_fusions`: onnxruntime's BERT optimizer (EmbedLayerNormalization, Attention,
  SkipLayerNormalization, BiasGelu, ...). Layers that do not score fuse to Attention; scoring
  layers project Q/K/V with one packed MatMul, which the attention fuser does not match, so their
  Softmax (read by the score, DESIGN.md §4) stays. The pass checks that every Softmax read by a score
  survived. It runs at opt_level 0 because the graph holds custom-domain nodes; the TokenPrune
  function and its opset import are carried over.
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


def _scoring_softmaxes(model: onnx.ModelProto) -> set[str]:
    """Outputs of Softmax nodes read twice (the context MatMul and the importance score)."""
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    return {node.output[0] for node in model.graph.node if node.op_type == "Softmax" and consumers.get(node.output[0], 0) > 1}


def ort_transformer_fusions(model: onnx.ModelProto, num_heads: int, hidden_size: int) -> tuple[onnx.ModelProto, PassReport]:
    """Apply onnxruntime's BERT fusions; report the fused-op counts (non-zero ones)."""
    from onnxruntime.transformers.optimizer import optimize_model

    scoring = _scoring_softmaxes(model)
    with tempfile.TemporaryDirectory(prefix="tokprune-fuse-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        optimizer = optimize_model(str(path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
        counts = {k: int(v) for k, v in optimizer.get_fused_operator_statistics().items() if v}
        fused = optimizer.model
    lost = scoring - _scoring_softmaxes(fused)
    if lost:
        raise PassError(f"onnxruntime's fuser removed {len(lost)} Softmax(es) that feed an importance score: export without --optimize")
    have = {(f.domain, f.name) for f in fused.functions}
    fused.functions.extend(f for f in model.functions if (f.domain, f.name) not in have)
    if model.functions and not any(o.domain == OP_DOMAIN for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid(OP_DOMAIN, OP_VERSION))
    contrib = {n.domain for n in fused.graph.node} - {"", "ai.onnx", OP_DOMAIN}
    fused.opset_import.extend(onnx.helper.make_opsetid(d, 1) for d in sorted(contrib - {o.domain for o in fused.opset_import}))
    return fused, PassReport("ort_transformer_fusions", counts)
