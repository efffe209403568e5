"""PyTorch PrunedEncoder -> ONNX artifact directory (the contract: onnx_tokprune.artifact)."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from onnx_tokprune.architectures import spec_for
from onnx_tokprune.artifact import CLS_ONLY_PASS, HEADS, MODEL_INPUTS, ExportInfo, Manifest, PassRecord, kept_output_name, write_artifact
from onnx_tokprune.errors import ExportError
from onnx_tokprune.export.op import add_scored_attention_function, add_token_prune_function
from onnx_tokprune.export.quantize import DEFAULT_INT8
from onnx_tokprune.io import check_output_dir
from onnx_tokprune.modeling import PrunedEncoder
from onnx_tokprune.scoring import OP_DOMAIN, OP_NAME, OP_VERSION

MIN_OPSET = 17
MAX_OPSET = 18


class _Exportable(torch.nn.Module):
    """Flattens PrunedOutput into (logits, kept_index_<l>...), a span head's (start_logits, end_logits,
    kept_index_<l>...): each layer's raw TokenPrune kept_index (positions in that layer's input);
    `artifact.original_positions` composes them."""

    def __init__(self, encoder: PrunedEncoder, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.encoder = encoder
        self.inputs = inputs

    def forward(self, *args):
        out = self.encoder(**dict(zip(self.inputs, args)))
        if self.encoder.head == "span":
            return (out.start_logits, out.end_logits, *out.kept_index)
        return (out.logits, *out.kept_index)


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET} or {MAX_OPSET}")


def legacy_export(
    module: torch.nn.Module, vocab_size: int, output_axes: dict[str, dict[int, str]], opset: int,
    custom_opsets: dict[str, int] | None = None, inputs: tuple[str, ...] = MODEL_INPUTS,
) -> onnx.ModelProto:
    """TorchScript-exporter (dynamo=False, docs/design.md §4) export of a module taking `inputs` (names
    from artifact.MODEL_INPUTS), with dynamic batch and sequence; `output_axes` names the outputs (in
    order) and their dynamic axes."""
    seq = 16
    values = {
        "input_ids": (torch.arange(2 * seq).view(2, seq) * 7 + 5) % vocab_size,
        "attention_mask": torch.ones(2, seq, dtype=torch.long),
        "token_type_ids": torch.zeros(2, seq, dtype=torch.long),
    }
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs} | output_axes
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(values[name] for name in inputs),
            buf,
            input_names=list(inputs),
            output_names=list(output_axes),
            dynamic_axes=axes,
            opset_version=opset,
            custom_opsets=custom_opsets,
            dynamo=False,
        )
    return onnx.load_from_string(buf.getvalue())


def to_onnx(encoder: PrunedEncoder, opset: int = MIN_OPSET) -> onnx.ModelProto:
    """Export a drop-mode PrunedEncoder (or an unpruned one: config None) to an ONNX model."""
    check_opset(opset)
    if encoder.mode != "drop":
        raise ExportError("only drop mode is exported: mask mode keeps pruned tokens in the tensors")
    inputs = spec_for(encoder.model.config).inputs
    head_axes = {0: "batch"} if encoder.head == "sequence" else {0: "batch", 1: "sequence"}
    axes = {name: head_axes for name in HEADS[encoder.head]}
    axes.update({kept_output_name(layer): {0: "batch", 1: f"kept_{layer}"} for layer in encoder.pruning_layers})
    custom = {OP_DOMAIN: OP_VERSION} if encoder.pruning_layers else None
    model = legacy_export(_Exportable(encoder, inputs).eval(), encoder.model.config.vocab_size, axes, opset, custom, inputs)
    if encoder.pruning_layers:
        add_token_prune_function(model, encoder.config.rule, encoder.config.bin_rounding)
        add_scored_attention_function(model, encoder.num_heads, encoder.head_dim, encoder.config.normalizer_constant())
    onnx.checker.check_model(model, full_check=True)
    return model


def count_token_prune(model: onnx.ModelProto) -> int:
    return sum(1 for node in model.graph.node if node.domain == OP_DOMAIN and node.op_type == OP_NAME)


def manifest(
    encoder: PrunedEncoder, model: onnx.ModelProto, opset: int, source: str,
    passes: list[PassRecord] | tuple[PassRecord, ...] = (), int8: dict[str, Any] | None = None,
) -> Manifest:
    """The artifact's manifest: the pruning config plus what the export produced (`int8`: the
    quantization counts of an INT8 export)."""
    cfg = encoder.config
    export = ExportInfo(
        opset=opset,
        source=source,
        architecture=encoder.model.config.model_type,
        pruning_layers=tuple(encoder.pruning_layers),
        outputs=tuple(o.name for o in model.graph.output),
        token_prune_nodes=count_token_prune(model),
        op={"domain": OP_DOMAIN, "name": OP_NAME, "version": OP_VERSION},
        folded_parameters={
            str(rule.layer): {"threshold": threshold, "bin_mask": list(bins), "keep_ratio": ratio}
            for rule in (cfg.layers if cfg is not None else ())
            for threshold, bins, ratio in [rule.op_params()]
        },
        passes=tuple(passes),
        int8=int8,
        head=encoder.head,
    )
    return Manifest(export=export, pruning=cfg)


def export_artifact(
    encoder: PrunedEncoder,
    model_dir: str | os.PathLike,
    output: str | os.PathLike,
    opset: int = MIN_OPSET,
    force: bool = False,
    int8: bool = False,
    optimize: bool = False,
    int8_setting: str = DEFAULT_INT8,
    cls_only: bool = False,
) -> Manifest:
    """Write an artifact dir atomically (artifact.write_artifact) and return its manifest.

    `optimize`: onnxruntime's transformer fusions and the embedding rule, held to the architecture's
    fusion contract (export.passes.optimize_pruned; a scoring layer's attention stays its
    ScoredAttention node). An unpruned encoder (config None) is then exported from the HF model
    itself and fully fused (export.baseline: Attention included), the baseline a practitioner would deploy.
    `int8`: dynamic INT8 quantization of the weight MatMul/Gemm nodes (export.quantize.to_int8) with
    `int8_setting` (export.quantize.INT8_SETTINGS: "portable" is correct on every x86-64 CPU).
    `cls_only`: the CLS_ONLY_PASS (PrunedEncoder cls_only), recorded with its count, or with the reason
    it refused (a span head, a last layer that prunes).
    """
    check_output_dir(Path(output), force)
    passes: list[PassRecord] = []
    int8_info = None
    hf = encoder.model.config
    if cls_only:
        refusal = encoder.cls_only_refusal()
        passes.append(PassRecord(CLS_ONLY_PASS, {} if refusal else {"cls_only_layers": 1}, (refusal,) if refusal else ()))
        if not refusal:
            encoder = PrunedEncoder(encoder.adapter, encoder.config, "drop", head=encoder.head, cls_only=True).eval()
    if optimize and encoder.config is None and not encoder.cls_only:
        from onnx_tokprune.export.baseline import export_unpruned_optimized, quantize_unpruned_optimized

        model, reports = export_unpruned_optimized(encoder.model, opset, encoder.head)
        passes.extend(reports)
        if int8:
            model, int8_info = quantize_unpruned_optimized(model, int8_setting)
    else:
        model = to_onnx(encoder, opset)
        if optimize:
            from onnx_tokprune.export.passes import optimize_pruned

            model, reports = optimize_pruned(model, hf, encoder.pruning_layers, encoder.cls_only)
            passes.extend(reports)
        if int8:
            from onnx_tokprune.export.quantize import to_int8

            model, int8_info = to_int8(model, int8_setting)
    record = manifest(encoder, model, opset, str(model_dir), passes, int8_info)
    # the full config, defaults included: readers without transformers (runtime, FLOPs) find every field
    write_artifact(output, model, json.loads(hf.to_json_string(use_diff=False)), model_dir, record, force)
    return record
