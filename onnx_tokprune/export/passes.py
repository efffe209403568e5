"""Graph passes on an exported graph; each returns the rewritten model and a PassRecord (how often it fired).

- `ort_transformer_fusions`: onnxruntime's transformer optimizer for the architecture's fuser model
  type (EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu, ...). Layers that do
  not score fuse to Attention; a scoring layer's attention is one `tokprune::ScoredAttention` node
  (it also yields the score, docs/design.md §4), which the fuser leaves alone: the pass checks that
  every one survived. It runs at opt_level 0 because the graph holds custom-domain nodes; the
  model's functions and their opset import are carried over.
- `embed_layer_norm_fusion`: an onnxscript rewrite rule (EmbedLayerNormFusion) that fuses BERT's
  embeddings into EmbedLayerNormalization where onnxruntime's fuser did not (layer 0 scores).

The fused-op counts are the contract: `optimize_pruned` (and export.baseline) end with
`check_fusions`, which refuses a graph that holds fewer fused ops than the architecture's spec
expects (ArchitectureSpec.expected_fusions) and names the fusion that fell short.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnxscript.optimizer import remove_unused_nodes
from onnxscript.rewriter import pattern

from onnx_tokprune.architectures import ArchitectureSpec, spec_for
from onnx_tokprune.artifact import PassRecord
from onnx_tokprune.errors import PassError
from onnx_tokprune.export.op import carry_over_functions
from onnx_tokprune.scored_attention import ATTENTION_OP_NAME
from onnx_tokprune.scoring import OP_DOMAIN


def _scored_attention_nodes(model: onnx.ModelProto) -> list[tuple[str, ...]]:
    """The outputs of every ScoredAttention node (the scoring layers' attention and score)."""
    return [tuple(n.output) for n in model.graph.node if n.domain == OP_DOMAIN and n.op_type == ATTENTION_OP_NAME]


def run_ort_fuser(model: onnx.ModelProto, spec: ArchitectureSpec, hf_config: Any, opt_level: int | None = None) -> tuple[onnx.ModelProto, dict[str, int]]:
    """onnxruntime.transformers.optimizer.optimize_model on `model` with the spec's fuser model type
    and the config's head count and width; returns the fused model and the non-zero fused-op counts.
    `opt_level=0` for graphs with custom-domain nodes (onnxruntime's own graph optimizations would
    need their kernels)."""
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = spec.fields.get(hf_config, "heads"), spec.fields.get(hf_config, "hidden")
    with tempfile.TemporaryDirectory(prefix="tokprune-fuse-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        optimizer = optimize_model(str(path), model_type=spec.fuser_model_type, num_heads=heads, hidden_size=hidden, opt_level=opt_level)
        counts = {k: int(v) for k, v in optimizer.get_fused_operator_statistics().items() if v}
        return optimizer.model, counts


def ort_transformer_fusions(model: onnx.ModelProto, hf_config: Any) -> tuple[onnx.ModelProto, PassRecord]:
    """Apply onnxruntime's transformer fusions to a pruned graph; report the fused-op counts."""
    scoring = _scored_attention_nodes(model)
    fused, counts = run_ort_fuser(model, spec_for(hf_config), hf_config, opt_level=0)
    if _scored_attention_nodes(fused) != scoring:
        raise PassError("onnxruntime's fuser changed a scoring layer's ScoredAttention node: export without --optimize")
    carry_over_functions(model, fused)
    contrib = {n.domain for n in fused.graph.node} - {"", "ai.onnx", OP_DOMAIN}
    fused.opset_import.extend(onnx.helper.make_opsetid(d, 1) for d in sorted(contrib - {o.domain for o in fused.opset_import}))
    return fused, PassRecord("ort_transformer_fusions", counts)


def check_fusions(model: onnx.ModelProto, hf_config: Any, scoring_layers: tuple[int, ...] = (), cls_only_last: bool = False) -> dict[str, int]:
    """PassError naming the first fused op of the architecture's contract (spec.expected_fusions)
    that the graph holds fewer of than expected; returns the expected counts."""
    spec = spec_for(hf_config)
    expected = spec.expected_fusions(hf_config, tuple(scoring_layers), cls_only_last)
    found = Counter(n.op_type for n in model.graph.node)
    for op, want in expected.items():
        if found[op] < want:
            raise PassError(
                f"the optimized graph holds {found[op]} {op} node(s) where {spec.model_type}'s fusion contract expects {want} "
                f"(scoring layers {list(scoring_layers)}): onnxruntime's fuser did not match this export; export without --optimize"
            )
    return expected


def _embedding_refusal(context, inputs, tables, normed, position_ids) -> pattern.MatchResult:
    """The checks both embedding rules share; a failed MatchResult says why the rule refused."""
    result = pattern.MatchResult()
    graph_inputs = context.graph_or_function.inputs
    if not all(any(value is i for i in graph_inputs) for value in inputs):
        return result.fail("input_ids and token_type_ids must be graph inputs" if len(inputs) == 2 else "input_ids must be a graph input")
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
        return _embedding_refusal(context, (input_ids, token_type_ids), (word, token_type, position, gamma, beta), normed, position_ids)

    def rewrite(self, op, input_ids, token_type_ids, word, token_type, position, gamma, beta, normed, **_):
        epsilon = normed.producer().attributes.get_float("epsilon", 1e-5)
        ids = op.Cast(input_ids, to=onnx.TensorProto.INT32)
        types = op.Cast(token_type_ids, to=onnx.TensorProto.INT32)
        output, _mask_index = op.EmbedLayerNormalization(
            ids, types, word, position, token_type, gamma, beta, epsilon=epsilon, _domain="com.microsoft", _outputs=2
        )
        return output


class EmbedLayerNormFusionNoTypes(pattern.RewriteRuleClassBase):
    """The same for embeddings without token types (DistilBERT: word + position Gathers, one Add,
    LayerNormalization): EmbedLayerNormalization with its optional segment inputs left out."""

    def __init__(self, name: str | None = None, remove_nodes: bool = False, as_function: bool = False) -> None:
        # The word Gather also feeds the Shape that sizes the position ids, so the matched nodes
        # cannot be removed with the match; apply_rule's remove_unused_nodes drops them once dead.
        super().__init__(name, remove_nodes, as_function)

    def pattern(self, op, input_ids, word, position, position_ids, gamma, beta):
        summed = op.Add(op.Gather(word, input_ids), op.Gather(position, position_ids))
        return op.LayerNormalization(summed, gamma, beta, _allow_other_attributes=True, _outputs=["normed"])

    def check(self, context, input_ids, word, position, position_ids, gamma, beta, normed, **_):
        return _embedding_refusal(context, (input_ids,), (word, position, gamma, beta), normed, position_ids)

    def rewrite(self, op, input_ids, word, position, gamma, beta, normed, **_):
        epsilon = normed.producer().attributes.get_float("epsilon", 1e-5)
        ids = op.Cast(input_ids, to=onnx.TensorProto.INT32)
        output, _mask_index = op.EmbedLayerNormalization(
            ids, None, word, position, None, gamma, beta, epsilon=epsilon, _domain="com.microsoft", _outputs=2
        )
        return output


def _ir_graph(model: onnx.ModelProto) -> ir.Model:
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    del stripped.functions[:]  # the rewriter would also walk (and constant-fold) the function bodies
    return ir.serde.deserialize_model(stripped)


def refusals(rule: pattern.RewriteRule, model: onnx.ModelProto) -> tuple[str, ...]:
    """The reasons `rule`'s check gave where its pattern matched `model` (a dry run: onnxscript's
    tracer records the best near-matches and rewrites nothing)."""
    tracer = pattern.MatchingTracer()
    pattern.RewriteRuleSet([rule]).apply_to_model(_ir_graph(model), tracer=tracer)
    reasons = (m.match_result.reason for matches in tracer.best_matches_map.values() for m in matches
               if m.status == pattern.MatchStatus.CONDITION_FAILED and m.match_result.reason)
    return tuple(dict.fromkeys(reasons))


def apply_rule(rules: list[pattern.RewriteRule], model: onnx.ModelProto, name: str, fused_op: str) -> tuple[onnx.ModelProto, PassRecord]:
    """Apply rewrite rules (alternatives for one fusion) to a graph, its functions left as they are;
    the record counts the `fused_op` nodes they made or, when they made none, gives their checks'
    reasons at the near-matches."""
    ir_model = _ir_graph(model)
    count = pattern.RewriteRuleSet(list(rules)).apply_to_model(ir_model)
    remove_unused_nodes(ir_model)  # what the replaced nodes alone consumed
    fused = carry_over_functions(model, ir.serde.serialize_model(ir_model))
    if count and not any(o.domain == "com.microsoft" for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    refused = () if count else tuple(dict.fromkeys(r for rule in rules for r in refusals(rule, model)))
    return fused, PassRecord(name, {fused_op: count} if count else {}, refused)


EMBEDDING_RULES = (EmbedLayerNormFusion, EmbedLayerNormFusionNoTypes)


def embed_layer_norm_fusion(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassRecord]:
    """Fuse the embeddings into EmbedLayerNormalization where onnxruntime's fuser did not
    (EmbedLayerNormFusion, or EmbedLayerNormFusionNoTypes without token types); the record says
    why the rules refused when they matched but did not fire."""
    return apply_rule([rule.rule() for rule in EMBEDDING_RULES], model, "embed_layer_norm_fusion", "EmbedLayerNormalization")


def optimize_pruned(
    model: onnx.ModelProto, hf_config: Any, scoring_layers: tuple[int, ...], cls_only_last: bool = False
) -> tuple[onnx.ModelProto, list[PassRecord]]:
    """`tokprune-export --optimize` on a pruned graph: onnxruntime's fusions, then the embedding rule,
    then the architecture's fusion contract (check_fusions)."""
    fused, fusions = ort_transformer_fusions(model, hf_config)
    fused, embed = embed_layer_norm_fusion(fused)
    check_fusions(fused, hf_config, scoring_layers, cls_only_last)
    return fused, [fusions, embed]
