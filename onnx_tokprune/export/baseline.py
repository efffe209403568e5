"""The unpruned baseline a practitioner would deploy instead of a pruned model.

The Hugging Face classifier exported with the legacy exporter (eager attention, opset 17) and fused
by onnxruntime's BERT optimizer: EmbedLayerNormalization 1, Attention L, SkipLayerNormalization 2L,
BiasGelu L (the fused-op counts are the contract, `expected_fusions`). Its INT8 form quantizes
Attention (-> QAttention) and every weight MatMul, pooler and classifier included (-> MatMulInteger),
with the same INT8 settings as our pruned INT8 graphs (export.quantize); embeddings stay fp32.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import onnx
import torch

from onnx_tokprune.export.exporter import legacy_export
from onnx_tokprune.export.passes import PassError, PassReport
from onnx_tokprune.export.quantize import DEFAULT_INT8, Int8Setting, int8_setting, run_quantize_dynamic, weight_linear_nodes


def expected_fusions(num_layers: int) -> dict[str, int]:
    """The fused-op counts of a fully fused L-layer BERT encoder."""
    return {"EmbedLayerNormalization": 1, "Attention": num_layers, "SkipLayerNormalization": 2 * num_layers, "BiasGelu": num_layers}


class _Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def export_unpruned_optimized(hf_model: torch.nn.Module, opset: int = 17) -> tuple[onnx.ModelProto, PassReport]:
    """Export an HF sequence classifier unpruned and apply onnxruntime's BERT fusions.

    Raises PassError when the fusions do not cover every layer (the graph would not be the
    strongest baseline)."""
    from onnxruntime.transformers.optimizer import optimize_model

    cfg = hf_model.config
    previous = cfg._attn_implementation
    hf_model.set_attn_implementation("eager")  # the fuser matches the eager attention subgraph only
    try:
        exported = legacy_export(_Logits(hf_model).eval(), cfg.vocab_size, {"logits": {0: "batch"}}, opset)
    finally:
        hf_model.set_attn_implementation(previous)
    with tempfile.TemporaryDirectory(prefix="tokprune-baseline-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(exported, str(path))
        optimizer = optimize_model(str(path), model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size)
        counts = {k: int(v) for k, v in optimizer.get_fused_operator_statistics().items() if v}
        model = optimizer.model
    want = expected_fusions(cfg.num_hidden_layers)
    if any(counts.get(k, 0) != v for k, v in want.items()):
        raise PassError(f"onnxruntime fused {counts}, expected {want}: this architecture's export does not fully fuse")
    return model, PassReport("ort_transformer_fusions", counts)


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
