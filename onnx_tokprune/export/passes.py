"""Graph passes on an exported graph; each returns the rewritten model and how often it fired.

- `ort_transformer_fusions`: onnxruntime's BERT optimizer (EmbedLayerNormalization, Attention,
  SkipLayerNormalization, BiasGelu, ...). Layers that do not score fuse to Attention; a scoring
  layer's attention is one `tokprune::ScoredAttention` node (it also yields the score, DESIGN.md §4),
  which the fuser leaves alone: the pass checks that every one survived. It runs at opt_level 0
  because the graph holds custom-domain nodes; the model's functions and their opset import are
  carried over.
- `embed_layer_norm_fusion`: an onnxscript rewrite rule (EmbedLayerNormFusion) that fuses BERT's
  embeddings into EmbedLayerNormalization where onnxruntime's fuser did not (layer 0 scores).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnxscript.optimizer import remove_unused_nodes
from onnxscript.rewriter import pattern

from onnx_tokprune.errors import PassError
from onnx_tokprune.export.op import carry_over_functions
from onnx_tokprune.scored_attention import ATTENTION_OP_NAME
from onnx_tokprune.scoring import OP_DOMAIN


@dataclass
class PassReport:
    """What a pass did: its name and, per rewritten op type, how many nodes it produced."""

    name: str
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "counts": dict(self.counts)}


def describe_counts(counts: dict[str, int]) -> str:
    """"Attention 4, BiasGelu 6" from a pass's recorded counts; "did not fire" when it rewrote nothing."""
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "did not fire"


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
    carry_over_functions(model, fused)
    contrib = {n.domain for n in fused.graph.node} - {"", "ai.onnx", OP_DOMAIN}
    fused.opset_import.extend(onnx.helper.make_opsetid(d, 1) for d in sorted(contrib - {o.domain for o in fused.opset_import}))
    return fused, PassReport("ort_transformer_fusions", counts)


class EmbedLayerNormFusion(pattern.RewriteRuleClassBase):
    """BERT's embeddings (word + token type + position Gathers, two Adds, LayerNormalization) ->
    one com.microsoft EmbedLayerNormalization. onnxruntime's own fuser only fuses them when layer 0
    is an Attention node, so a graph pruning at layer 0 keeps ~10 small nodes without this rule.
    Positions must be 0..S-1 (a Slice from 0 of an arange table): RoBERTa's do not match."""

    def pattern(self, op, input_ids, token_type_ids, word, token_type, position, position_ids, gamma, beta):
        words = op.Add(op.Gather(word, input_ids), op.Gather(token_type, token_type_ids))
        summed = op.Add(words, op.Gather(position, position_ids))
        return op.LayerNormalization(summed, gamma, beta, _allow_other_attributes=True, _outputs=["normed"])

    def check(self, context, input_ids, token_type_ids, word, token_type, position, position_ids, gamma, beta, normed, **_):
        result = pattern.MatchResult()
        graph_inputs = context.graph_or_function.inputs
        if not all(any(value is i for i in graph_inputs) for value in (input_ids, token_type_ids)):
            return result.fail("input_ids and token_type_ids must be graph inputs")
        tables = (word, token_type, position, gamma, beta)
        if any(t.const_value is None for t in tables):
            return result.fail("embedding tables, gamma and beta must be constants")
        if normed.producer().attributes.get_int("axis", -1) not in (-1, 2):
            return result.fail("LayerNormalization must normalise the last axis")
        positions = position_ids.producer()
        if positions is None or positions.op_type != "Slice" or len(positions.inputs) < 3:
            return result.fail("position ids must be a Slice of a constant table")
        table, starts = positions.inputs[0], positions.inputs[1]
        if table.const_value is None or starts.const_value is None:
            return result.fail("position ids must be a Slice of a constant table")
        ids = table.const_value.numpy().reshape(-1)
        if not np.array_equal(ids, np.arange(ids.size)) or starts.const_value.numpy().reshape(-1).tolist() != [0]:
            return result.fail("position ids must be 0..S-1")
        return result

    def rewrite(self, op, input_ids, token_type_ids, word, token_type, position, gamma, beta, normed, **_):
        epsilon = normed.producer().attributes.get_float("epsilon", 1e-5)
        ids = op.Cast(input_ids, to=onnx.TensorProto.INT32)
        types = op.Cast(token_type_ids, to=onnx.TensorProto.INT32)
        output, _mask_index = op.EmbedLayerNormalization(
            ids, types, word, position, token_type, gamma, beta, epsilon=epsilon, _domain="com.microsoft", _outputs=2
        )
        return output


def embed_layer_norm_fusion(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    """Fuse BERT's embeddings into EmbedLayerNormalization where onnxruntime's fuser did not
    (EmbedLayerNormFusion); the model's functions are left as they are."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    del stripped.functions[:]  # the rewriter would also walk (and constant-fold) the function bodies
    ir_model = ir.serde.deserialize_model(stripped)
    count = pattern.RewriteRuleSet([EmbedLayerNormFusion.rule()]).apply_to_model(ir_model)
    remove_unused_nodes(ir_model)  # the position-id Slice and its shape arithmetic
    fused = carry_over_functions(model, ir.serde.serialize_model(ir_model))
    if count and not any(o.domain == "com.microsoft" for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return fused, PassReport("embed_layer_norm_fusion", {"EmbedLayerNormalization": count} if count else {})


def optimize_pruned(model: onnx.ModelProto, num_heads: int, hidden_size: int) -> tuple[onnx.ModelProto, list[PassReport]]:
    """`tokprune-export --optimize` on a pruned graph: onnxruntime's fusions, then the embedding rule."""
    fused, fusions = ort_transformer_fusions(model, num_heads, hidden_size)
    fused, embed = embed_layer_norm_fusion(fused)
    return fused, [fusions, embed]
