"""The unpruned baseline a practitioner would deploy instead of a pruned model.

The Hugging Face classifier exported with the legacy exporter (eager attention, opset 17) and fused
by onnxruntime's transformer optimizer: Attention L, SkipLayerNormalization 2L, BiasGelu L and, where
the architecture's embeddings fuse, EmbedLayerNormalization 1 (the fused-op counts are the contract,
ArchitectureSpec.expected_fusions, enforced by export.passes.check_fusions). Its INT8 form quantizes
Attention (-> QAttention) and every weight MatMul, pooler and classifier included (-> MatMulInteger),
with the same INT8 settings as our pruned INT8 graphs (export.quantize); embeddings stay fp32.
"""

from __future__ import annotations

from typing import Any

import onnx
import torch

from onnx_tokprune.architectures import spec_for
from onnx_tokprune.artifact import HEADS, PassRecord
from onnx_tokprune.errors import PassError
from onnx_tokprune.export.exporter import legacy_export
from onnx_tokprune.export.passes import check_fusions, embed_layer_norm_fusion, run_ort_fuser
from onnx_tokprune.export.quantize import DEFAULT_INT8, Int8Setting, int8_setting, run_quantize_dynamic, weight_linear_nodes


class _Logits(torch.nn.Module):
    """The HF model's outputs named by artifact.HEADS[head] (logits, or start_logits and end_logits)."""

    def __init__(self, model: torch.nn.Module, inputs: tuple[str, ...], head: str) -> None:
        super().__init__()
        self.model = model
        self.inputs = inputs
        self.outputs = HEADS[head]

    def forward(self, *args):
        out = self.model(**dict(zip(self.inputs, args)))
        return tuple(getattr(out, name) for name in self.outputs)


def export_unpruned_optimized(hf_model: torch.nn.Module, opset: int = 17, head: str = "sequence") -> tuple[onnx.ModelProto, list[PassRecord]]:
    """Export an HF sequence classifier (or, `head` "span", QA model) unpruned and apply onnxruntime's transformer fusions, then the
    embedding rule where onnxruntime's fuser left the embeddings (export.passes.embed_layer_norm_fusion:
    the strongest baseline). Raises PassError when the fusions fall short of the architecture's contract."""
    cfg = hf_model.config
    spec = spec_for(cfg)
    previous = cfg._attn_implementation
    hf_model.set_attn_implementation("eager")  # the fuser matches the eager attention subgraph only
    try:
        axes = {name: {0: "batch"} if head == "sequence" else {0: "batch", 1: "sequence"} for name in HEADS[head]}
        exported = legacy_export(_Logits(hf_model, spec.inputs, head).eval(), cfg.vocab_size, axes, opset, inputs=spec.inputs)
    finally:
        hf_model.set_attn_implementation(previous)
    model, counts = run_ort_fuser(exported, spec, cfg)
    model, embed = embed_layer_norm_fusion(model)
    check_fusions(model, cfg)
    return model, [PassRecord("ort_transformer_fusions", counts), embed]


def quantize_unpruned_optimized(
    model: onnx.ModelProto, setting: str | Int8Setting = DEFAULT_INT8
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Dynamic INT8 (an export.quantize.INT8_SETTINGS entry) of a fused baseline's Attention and weight MatMul nodes."""
    setting = setting if isinstance(setting, Int8Setting) else int8_setting(setting)
    quantized = run_quantize_dynamic(model, setting, op_types_to_quantize=["MatMul", "Attention"])
    ops = [n.op_type for n in quantized.graph.node]
    counts = {"quantized_attention": ops.count("QAttention"), "quantized_matmuls": ops.count("MatMulInteger"), **setting.to_json()}
    left = ops.count("Attention") + len(weight_linear_nodes(quantized))
    if left:
        raise PassError(f"INT8 quantization left {left} Attention / weight MatMul node(s) fp32")
    return quantized, counts
