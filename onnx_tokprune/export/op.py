"""The `tokprune::TokenPrune` and `tokprune::ScoredAttention` ops as ONNX functions with standard-op
bodies (docs/design.md §3).

A model that carries these functions runs in a plain `onnxruntime.InferenceSession`: onnxruntime
inlines a body when no kernel for the op is registered. TokenPrune's body computes exactly the rule
of `onnx_tokprune.scoring` (same ranks, same tie-breaks, same integer bin arithmetic);
ScoredAttention's is `onnx_tokprune.scored_attention` op for op.

TokenPrune inputs: hidden f32[B,S,D], score f32[B,S], mask i64[B,S], threshold f32[], bin_mask i64[NB],
keep_ratio f32[]. Outputs: hidden f32[B,K,D], mask i64[B,K], kept_index i64[B,K] (-1 = padding).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnx_tokprune.scored_attention import ATTENTION_OP_NAME
from onnx_tokprune.scoring import OP_DOMAIN, OP_NAME, OP_VERSION, TOP_K_SHRINK

INPUTS = ["hidden", "score", "mask", "threshold", "bin_mask", "keep_ratio"]
OUTPUTS = ["hidden_out", "mask_out", "kept_index"]


def _const(name: str, value, dtype) -> onnx.NodeProto:
    dims = [] if not isinstance(value, list) else [len(value)]
    vals = value if isinstance(value, list) else [value]
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, dtype, dims, vals))


def token_prune_function(opset: int, rule: str | None = None, bin_rounding: str = "exact") -> onnx.FunctionProto:
    """The FunctionProto of TokenPrune whose body uses the default domain at `opset`.

    `rule=None` gives the full rule (all three parameters apply). A model whose layers all use one
    rule carries a body specialised to it ("threshold", "rank_bins" or "top_k"): the parameters the
    rule does not use are the exporter's neutral constants (LayerRule.op_params), so the result is
    the same with fewer nodes. `bin_rounding="top"` (rank_bins only) computes ToP's float32 bin
    expression; such nodes carry the attribute `bin_rounding="top"` so a compiled kernel can tell.
    """
    n = helper.make_node
    nodes = [
        _const("zero", 0, TensorProto.INT64),
        _const("one", 1, TensorProto.INT64),
        _const("minus_one", -1, TensorProto.INT64),
        _const("axis1", [1], TensorProto.INT64),
        _const("axis_last", [-1], TensorProto.INT64),
        _const("zero_f", 0.0, TensorProto.FLOAT),
        # positions, CLS and the valid (kept, non-CLS) tokens
        n("Shape", ["score"], ["score_shape"]),
        n("Gather", ["score_shape", "one"], ["seq"]),
        n("Range", ["zero", "seq", "one"], ["pos"]),
        n("Expand", ["pos", "score_shape"], ["pos_b"]),
        n("Equal", ["pos", "zero"], ["is_cls"]),
        n("Equal", ["mask", "one"], ["is_kept"]),
    ]
    terms = []
    if rule in (None, "rank_bins", "top_k"):
        # rank of each valid (kept, non-CLS) token by descending score; TopK breaks ties to the lower index
        nodes += [
            n("Not", ["is_cls"], ["not_cls"]),
            n("And", ["is_kept", "not_cls"], ["valid"]),
            _const("neg_inf", float("-inf"), TensorProto.FLOAT),
            _const("idx1", [1], TensorProto.INT64),
            n("Where", ["valid", "score", "neg_inf"], ["ranked"]),
            n("Reshape", ["seq", "idx1"], ["seq_1d"]),
            n("TopK", ["ranked", "seq_1d"], ["sorted_vals", "order"], axis=1, largest=1, sorted=1),
            n("ScatterElements", ["order", "order", "pos_b"], ["rank"], axis=1),
            n("Cast", ["valid"], ["valid_i"], to=TensorProto.INT64),
            n("ReduceSum", ["valid_i", "axis1"], ["count"], keepdims=1),
        ]
    if rule == "rank_bins" and bin_rounding == "top":
        # ToP compatibility: bin = int(rank / (n + 1e-6) * NB) in float32
        nodes += [
            n("Shape", ["bin_mask"], ["nbins"]),
            n("Cast", ["nbins"], ["nbins_f"], to=TensorProto.FLOAT),
            n("Cast", ["rank"], ["rank_f"], to=TensorProto.FLOAT),
            n("Cast", ["count"], ["count_f"], to=TensorProto.FLOAT),
            _const("top_eps", 1e-6, TensorProto.FLOAT),
            _const("one_f", 1.0, TensorProto.FLOAT),
            n("Add", ["count_f", "top_eps"], ["count_eps"]),
            n("Div", ["rank_f", "count_eps"], ["rank_q"]),
            n("Clip", ["rank_q", "zero_f", "one_f"], ["rank_q1"]),
            n("Mul", ["rank_q1", "nbins_f"], ["bin_f"]),
            n("Floor", ["bin_f"], ["bin_floor"]),
            n("Cast", ["bin_floor"], ["bin_raw"], to=TensorProto.INT64),
        ]
    elif rule in (None, "rank_bins"):
        # rank bins: bin = floor(rank * NB / max(n, 1))
        nodes += [
            n("Shape", ["bin_mask"], ["nbins"]),
            n("Max", ["count", "one"], ["count_safe"]),
            n("Mul", ["rank", "nbins"], ["rank_nb"]),
            n("Div", ["rank_nb", "count_safe"], ["bin_raw"]),
        ]
    if rule in (None, "rank_bins"):
        # clipped for invalid tokens, then looked up in the bin table
        nodes += [
            n("Sub", ["nbins", "one"], ["last_bin"]),
            n("Min", ["bin_raw", "last_bin"], ["bin"]),
            n("Gather", ["bin_mask", "bin"], ["bin_keep_i"]),
            n("Equal", ["bin_keep_i", "one"], ["bin_keep"]),
        ]
        terms.append("bin_keep")
    if rule in (None, "top_k"):
        # top-k: rank < ceil(keep_ratio * n * (1 - 1e-6))
        nodes += [
            n("Cast", ["count"], ["count_f"], to=TensorProto.FLOAT),
            _const("top_k_shrink", TOP_K_SHRINK, TensorProto.FLOAT),
            n("Mul", ["keep_ratio", "count_f"], ["k_raw"]),
            n("Mul", ["k_raw", "top_k_shrink"], ["k_f"]),
            n("Ceil", ["k_f"], ["k_ceil"]),
            n("Cast", ["k_ceil"], ["k"], to=TensorProto.INT64),
            n("Less", ["rank", "k"], ["topk_keep"]),
        ]
        terms.append("topk_keep")
    if rule in (None, "threshold"):
        nodes.append(n("GreaterOrEqual", ["score", "threshold"], ["thr_keep"]))
        terms.append("thr_keep")
    # keep = kept so far AND (CLS OR every term of the rule)
    current = terms[0]
    for i, term in enumerate(terms[1:]):
        nodes.append(n("And", [current, term], [f"terms_{i}"]))
        current = f"terms_{i}"
    nodes += [
        n("Or", [current, "is_cls"], ["keep_or_cls"]),
        n("And", ["keep_or_cls", "is_kept"], ["keep"]),
        # compaction: kept positions first, in order; K = the batch's largest kept count
        n("Cast", ["keep"], ["keep_i"], to=TensorProto.INT64),
        n("ReduceSum", ["keep_i", "axis1"], ["kept_count"], keepdims=0),
        n("ReduceMax", ["kept_count"], ["kmax"], keepdims=1),
        n("Add", ["pos_b", "seq"], ["pos_late"]),
        n("Where", ["keep", "pos_b", "pos_late"], ["sort_key"]),
        n("TopK", ["sort_key", "kmax"], ["key", "idx"], axis=1, largest=0, sorted=1),
        n("Less", ["key", "seq"], ["is_real"]),
        n("Cast", ["is_real"], ["mask_out"], to=TensorProto.INT64),
        n("Where", ["is_real", "idx", "minus_one"], ["kept_index"]),
        n("Unsqueeze", ["idx", "axis_last"], ["idx_3d"]),
        n("GatherND", ["hidden", "idx_3d"], ["gathered"], batch_dims=1),
        n("Unsqueeze", ["is_real", "axis_last"], ["real_3d"]),
        n("Where", ["real_3d", "gathered", "zero_f"], ["hidden_out"]),
    ]
    return helper.make_function(
        OP_DOMAIN,
        OP_NAME,
        INPUTS,
        OUTPUTS,
        nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=["bin_rounding"],
        doc_string="TokenPrune: remove tokens by score (threshold / rank bins / top-k); CLS always kept.",
    )


def _import_domain(model: onnx.ModelProto) -> None:
    if not any(o.domain == OP_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(OP_DOMAIN, OP_VERSION))


def _attach(model: onnx.ModelProto, name: str, build: Callable[[int], onnx.FunctionProto]) -> onnx.ModelProto:
    """Add the function `name` of our domain, built for the model's default-domain opset, unless the
    model has it; import the domain (in place)."""
    if not any(f.domain == OP_DOMAIN and f.name == name for f in model.functions):
        model.functions.append(build(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))))
    _import_domain(model)
    return model


def carry_over_functions(source: onnx.ModelProto, target: onnx.ModelProto) -> onnx.ModelProto:
    """Give `target` (a rewrite of `source` by a tool that drops model functions) the functions of
    `source` it lacks, and our domain's import when there are any (in place)."""
    have = {(f.domain, f.name) for f in target.functions}
    target.functions.extend(f for f in source.functions if (f.domain, f.name) not in have)
    if source.functions:
        _import_domain(target)
    return target


def add_token_prune_function(model: onnx.ModelProto, rule: str | None = None, bin_rounding: str = "exact") -> onnx.ModelProto:
    """Attach the TokenPrune function (specialised to `rule`, if given) and its domain (in place)."""
    return _attach(model, OP_NAME, lambda opset: token_prune_function(opset, rule, bin_rounding))


ATTENTION_INPUTS = ["qkv", "mask"]
ATTENTION_OUTPUTS = ["context", "score"]


def scored_attention_function(opset: int, num_heads: int, head_dim: int, normalizer: float | None) -> onnx.FunctionProto:
    """The FunctionProto of ScoredAttention (onnx_tokprune.scored_attention), its body specialised to
    the model's head count, head size and score normaliser (the node attributes repeat the first and
    the last for a compiled kernel). Same ops as the PyTorch reference: no standard-op rewrite of it
    matches onnxruntime's Attention fuser, so the probabilities stay in the graph."""
    n = helper.make_node
    nodes = [
        _const("split_shape", [0, 0, 3 * num_heads, head_dim], TensorProto.INT64),
        _const("merge_shape", [0, 0, num_heads * head_dim], TensorProto.INT64),
        _const("sqrt_d", float(math.sqrt(head_dim)), TensorProto.FLOAT),
        _const("one_f", 1.0, TensorProto.FLOAT),
        _const("min_f", float(np.finfo(np.float32).min), TensorProto.FLOAT),
        _const("axes_12", [1, 2], TensorProto.INT64),
        _const("heads_split", [num_heads] * 3, TensorProto.INT64),
        n("Reshape", ["qkv", "split_shape"], ["qkv_4d"]),
        n("Transpose", ["qkv_4d"], ["qkv_heads"], perm=[0, 2, 1, 3]),
        n("Split", ["qkv_heads", "heads_split"], ["q", "k", "v"], axis=1),
        n("Transpose", ["k"], ["k_t"], perm=[0, 1, 3, 2]),
        n("MatMul", ["q", "k_t"], ["qk"]),
        n("Div", ["qk", "sqrt_d"], ["scaled"]),
        # mask rows [B,1,1,S] and the additive bias (1 - rows) * float32 min
        n("Unsqueeze", ["mask", "axes_12"], ["mask_4d"]),
        n("Cast", ["mask_4d"], ["rows"], to=TensorProto.FLOAT),
        n("Sub", ["one_f", "rows"], ["masked"]),
        n("Mul", ["masked", "min_f"], ["bias"]),
        n("Add", ["scaled", "bias"], ["logits"]),
        n("Softmax", ["logits"], ["probs"], axis=-1),
        n("MatMul", ["probs", "v"], ["context_heads"]),
        n("Transpose", ["context_heads"], ["context_t"], perm=[0, 2, 1, 3]),
        n("Reshape", ["context_t", "merge_shape"], ["context"]),
        # score: probabilities each key receives from the kept queries, summed over heads, normalised
        n("MatMul", ["rows", "probs"], ["received"]),
        n("ReduceSum", ["received", "axes_12"], ["total"], keepdims=0),
    ]
    if normalizer:
        nodes += [
            _const("inv_norm", float(np.float32(1.0 / (num_heads * normalizer))), TensorProto.FLOAT),
            n("Mul", ["total", "inv_norm"], ["score"]),
        ]
    else:
        nodes += [
            _const("axis1", [1], TensorProto.INT64),
            _const("heads_f", float(num_heads), TensorProto.FLOAT),
            n("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT),
            n("ReduceSum", ["mask_f", "axis1"], ["kept"], keepdims=1),
            n("Mul", ["kept", "heads_f"], ["denominator"]),
            n("Div", ["total", "denominator"], ["score"]),
        ]
    return helper.make_function(
        OP_DOMAIN,
        ATTENTION_OP_NAME,
        ATTENTION_INPUTS,
        ATTENTION_OUTPUTS,
        nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=["num_heads", "normalizer"],
        doc_string="ScoredAttention: softmax(q k^T / sqrt(d) + mask bias) v and the importance score of the probabilities.",
    )


def add_scored_attention_function(model: onnx.ModelProto, num_heads: int, head_dim: int, normalizer: float | None) -> onnx.ModelProto:
    """Attach the ScoredAttention function (specialised to the model) and its domain (in place)."""
    return _attach(model, ATTENTION_OP_NAME, lambda opset: scored_attention_function(opset, num_heads, head_dim, normalizer))
