"""Dynamic INT8 quantization of an exported graph's linear layers (`tokprune-export --int8`).

Only MatMul / Gemm nodes whose weight (input B) is an initializer become MatMulInteger with
DynamicQuantizeLinear on the activation (QInt8 weights, per output channel). Activation x activation
MatMuls (attention) and the TokenPrune and ScoredAttention nodes (attention probabilities and
importance scores) stay fp32.

Settings (INT8_SETTINGS; the one used is recorded in the artifact's manifest as export.int8):
- ``portable`` (default): 7-bit weights (quantize_dynamic's ``reduce_range``). onnxruntime multiplies
  uint8 activations by int8 weights; on CPUs without VNNI (AVX2 only: most AMD before Zen 4, Intel
  before Ice Lake / Cascade Lake) its kernels sum pairs of products in int16 (VPMADDUBSW), which
  saturates when 2 x 255 x 127 > 32767. With weights in [-64, 63] the bound is 2 x 255 x 64 = 32640,
  so every CPU computes the same integers: the artifact gives the same logits wherever it is deployed
  (tests/test_int8_isa.py runs it on an emulated AVX2-only CPU).
- ``vnni``: full 8-bit weights, slightly more accurate, correct only on CPUs with AVX-VNNI or
  AVX512-VNNI (elsewhere the saturation above changes the logits; tests/test_int8_isa.py shows it).
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from onnx_tokprune.export.op import carry_over_functions

LINEAR_OPS = ("MatMul", "Gemm")
WEIGHT_TYPE = "QInt8"


@dataclass(frozen=True)
class Int8Setting:
    """How weights are quantized, and on which CPUs the result is correct."""

    name: str
    reduce_range: bool
    correct_on: str
    weight_type: str = WEIGHT_TYPE
    per_channel: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"setting": self.name, **{k: v for k, v in asdict(self).items() if k != "name"}}


INT8_SETTINGS = {
    "portable": Int8Setting("portable", reduce_range=True, correct_on="any x86-64 CPU (7-bit weights: no int16 saturation without VNNI)"),
    "vnni": Int8Setting("vnni", reduce_range=False, correct_on="CPUs with AVX-VNNI or AVX512-VNNI only (AVX2-only CPUs saturate)"),
}
DEFAULT_INT8 = "portable"


def int8_setting(name: str) -> Int8Setting:
    """The named setting; ValueError listing the known ones otherwise."""
    if name not in INT8_SETTINGS:
        raise ValueError(f"INT8 setting {name!r} is unknown; use one of {', '.join(INT8_SETTINGS)}")
    return INT8_SETTINGS[name]


def weight_linear_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The MatMul / Gemm nodes whose second input (the weight) is an initializer."""
    initializers = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in LINEAR_OPS and len(n.input) > 1 and n.input[1] in initializers]


def activation_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The MatMul nodes without an initializer weight: attention (QK^T, PV) and the score (rowmask @ probs)."""
    weights = {id(n) for n in weight_linear_nodes(model)}
    return [n for n in model.graph.node if n.op_type == "MatMul" and id(n) not in weights]


def run_quantize_dynamic(model: onnx.ModelProto, setting: Int8Setting, **options: Any) -> onnx.ModelProto:
    """onnxruntime's `quantize_dynamic` on an in-memory model with `setting`'s weights (type, range,
    per channel), `MatMulConstBOnly`, float as the type of tensors it cannot infer (com.microsoft
    nodes), and its per-call "consider pre-processing" warning silenced. `options` go to quantize_dynamic."""
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
                weight_type=getattr(QuantType, setting.weight_type),
                reduce_range=setting.reduce_range,
                per_channel=setting.per_channel,
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
                **options,
            )
        finally:
            root.setLevel(level)
        return onnx.load(str(dst))


def to_int8(model: onnx.ModelProto, setting: str | Int8Setting = DEFAULT_INT8) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Quantize `model`'s weight MatMul/Gemm nodes (and fused Attention nodes) dynamically
    (onnxruntime quantize_dynamic) with an INT8_SETTINGS entry.

    Returns (quantized model, info): "quantized_matmuls" / "quantized_gemms" (weight nodes now
    MatMulInteger), "fp32_matmuls" (activation MatMuls left as they were: the attention of plain layers),
    "quantized_attention" (Attention -> QAttention) when the graph was fused, and the setting's fields
    (Int8Setting.to_json).
    The model's functions (TokenPrune, ScoredAttention) and their opset import are carried over if lost.
    """
    setting = setting if isinstance(setting, Int8Setting) else int8_setting(setting)
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
        setting,
        op_types_to_quantize=[*LINEAR_OPS, "Attention"],  # Attention: the fused layers of --optimize
        nodes_to_exclude=excluded,
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
    }
    attention = sum(1 for n in model.graph.node if n.op_type == "Attention")
    if attention:
        counts["quantized_attention"] = attention
    return quantized, {**counts, **setting.to_json()}
