"""Dynamic INT8 quantization of an exported graph's linear layers (`tokprune-export --int8`).

Only MatMul / Gemm nodes whose weight (input B) is an initializer become MatMulInteger with
DynamicQuantizeLinear on the activation (QInt8 weights, per output channel by default: on the fused
SST-2 LTP MiniLM it loses 0.46 accuracy points, tools/int8_accuracy.sh; per-tensor weights lost 1.5 in
an earlier, unfused measurement). Activation x activation MatMuls
(attention) and the TokenPrune and ScoredAttention nodes (attention probabilities and importance
scores) stay fp32.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import onnx

from onnx_tokprune.export.op import carry_over_functions

LINEAR_OPS = ("MatMul", "Gemm")
WEIGHT_TYPE = "QInt8"


def weight_linear_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The MatMul / Gemm nodes whose second input (the weight) is an initializer."""
    initializers = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in LINEAR_OPS and len(n.input) > 1 and n.input[1] in initializers]


def activation_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The MatMul nodes without an initializer weight: attention (QK^T, PV) and the score (rowmask @ probs)."""
    weights = {id(n) for n in weight_linear_nodes(model)}
    return [n for n in model.graph.node if n.op_type == "MatMul" and id(n) not in weights]


def run_quantize_dynamic(model: onnx.ModelProto, **options: Any) -> onnx.ModelProto:
    """onnxruntime's `quantize_dynamic` on an in-memory model: QInt8 weights, no reduced range,
    `MatMulConstBOnly`, float as the type of tensors it cannot infer (com.microsoft nodes), and its
    per-call "consider pre-processing" warning silenced. `options` go to quantize_dynamic."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="tokprune-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                src,
                dst,
                weight_type=QuantType.QInt8,
                reduce_range=False,
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
                **options,
            )
        finally:
            root.setLevel(level)
        return onnx.load(str(dst))


def to_int8(model: onnx.ModelProto, per_channel: bool = True) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Quantize `model`'s weight MatMul/Gemm nodes (and fused Attention nodes) dynamically
    (onnxruntime quantize_dynamic, QInt8).

    Returns (quantized model, info): "quantized_matmuls" / "quantized_gemms" (weight nodes now
    MatMulInteger), "fp32_matmuls" (activation MatMuls left as they were: the attention of plain layers),
    "per_channel", and "quantized_attention" (Attention -> QAttention) when the graph was fused.
    The model's functions (TokenPrune, ScoredAttention) and their opset import are carried over if lost.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's model stays as it was
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):  # nodes_to_exclude selects by name: make names unique
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op_type}__{i}"
        seen.add(node.name)
    selected = weight_linear_nodes(model)
    # Excluded by name, besides MatMulConstBOnly: quantize_dynamic renames Gemm (split into
    # MatMul + Add) so nodes_to_quantize cannot name it; activation MatMuls keep their names.
    excluded = [n.name for n in activation_matmuls(model)]
    quantized = run_quantize_dynamic(
        model,
        op_types_to_quantize=[*LINEAR_OPS, "Attention"],  # Attention: the fused layers of --optimize
        nodes_to_exclude=excluded,
        per_channel=per_channel,
    )

    carry_over_functions(model, quantized)
    missed = [n.name for n in weight_linear_nodes(quantized)] + [n.name for n in quantized.graph.node if n.op_type == "Attention"]
    integer = sum(1 for n in quantized.graph.node if n.op_type == "MatMulInteger")
    kept = {n.name for n in activation_matmuls(quantized)}
    if missed or integer != len(selected) or kept != set(excluded):
        raise RuntimeError(
            f"INT8 quantization went wrong: {len(missed)} weight node(s) left fp32 {missed[:3]}, "
            f"{integer} MatMulInteger for {len(selected)} weight nodes, activation MatMuls {sorted(set(excluded) ^ kept)[:3]} changed"
        )
    onnx.checker.check_model(quantized, full_check=True)
    counts = {
        "quantized_matmuls": sum(1 for n in selected if n.op_type == "MatMul"),
        "quantized_gemms": sum(1 for n in selected if n.op_type == "Gemm"),
        "fp32_matmuls": sum(1 for n in quantized.graph.node if n.op_type == "MatMul"),
        "per_channel": per_channel,
    }
    attention = sum(1 for n in model.graph.node if n.op_type == "Attention")
    if attention:
        counts["quantized_attention"] = attention
    return quantized, counts
