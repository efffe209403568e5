"""PyTorch PrunedEncoder -> ONNX artifact directory (model.onnx, config, tokenizer, manifest)."""

from __future__ import annotations

import io
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from onnx_tokprune.config import CONFIG_NAME
from onnx_tokprune.errors import ExportError
from onnx_tokprune.export.op import add_scored_attention_function, add_token_prune_function
from onnx_tokprune.export.quantize import DEFAULT_INT8
from onnx_tokprune.io import atomic_output_dir, check_output_dir, write_json_atomic
from onnx_tokprune.modeling import PrunedEncoder
from onnx_tokprune.scoring import OP_DOMAIN, OP_NAME, OP_VERSION

MIN_OPSET = 17
MAX_OPSET = 18
MODEL_FILE = "model.onnx"
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "vocab.json", "merges.txt")


def kept_output_name(layer: int) -> str:
    return f"kept_index_{layer}"


class _Exportable(torch.nn.Module):
    """Flattens PrunedOutput into (logits, kept_index_<l>...): each layer's raw TokenPrune kept_index
    (positions in that layer's input); `runtime.original_positions` composes them."""

    def __init__(self, encoder: PrunedEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.encoder(input_ids, attention_mask, token_type_ids)
        return (out.logits, *out.kept_index)


def legacy_export(
    module: torch.nn.Module, vocab_size: int, output_axes: dict[str, dict[int, str]], opset: int, custom_opsets: dict[str, int] | None = None
) -> onnx.ModelProto:
    """TorchScript-exporter (dynamo=False, DESIGN.md §4) export of a module taking INPUT_NAMES, with
    dynamic batch and sequence; `output_axes` names the outputs (in order) and their dynamic axes."""
    seq = 16
    example = (
        (torch.arange(2 * seq).view(2, seq) * 7 + 5) % vocab_size,
        torch.ones(2, seq, dtype=torch.long),
        torch.zeros(2, seq, dtype=torch.long),
    )
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | output_axes
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            buf,
            input_names=INPUT_NAMES,
            output_names=list(output_axes),
            dynamic_axes=axes,
            opset_version=opset,
            custom_opsets=custom_opsets,
            dynamo=False,
        )
    return onnx.load_from_string(buf.getvalue())


def to_onnx(encoder: PrunedEncoder, opset: int = MIN_OPSET) -> onnx.ModelProto:
    """Export a drop-mode PrunedEncoder (or an unpruned one: config None) to an ONNX model."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET} or {MAX_OPSET}")
    if encoder.mode != "drop":
        raise ExportError("only drop mode is exported: mask mode keeps pruned tokens in the tensors")
    axes = {"logits": {0: "batch"}}
    axes.update({kept_output_name(layer): {0: "batch", 1: f"kept_{layer}"} for layer in encoder.pruning_layers})
    custom = {OP_DOMAIN: OP_VERSION} if encoder.pruning_layers else None
    model = legacy_export(_Exportable(encoder).eval(), encoder.model.config.vocab_size, axes, opset, custom)
    if encoder.pruning_layers:
        add_token_prune_function(model, encoder.config.rule, encoder.config.bin_rounding)
        add_scored_attention_function(model, encoder.num_heads, encoder.head_dim, encoder.config.normalizer_constant())
    onnx.checker.check_model(model, full_check=True)
    return model


def count_token_prune(model: onnx.ModelProto) -> int:
    return sum(1 for node in model.graph.node if node.domain == OP_DOMAIN and node.op_type == OP_NAME)


def manifest(
    encoder: PrunedEncoder, model: onnx.ModelProto, opset: int, source: str, int8: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The artifact's tokprune.json: the pruning config plus what the export produced (`int8`: the
    quantization counts of an INT8 export, recorded as export.int8)."""
    cfg = encoder.config
    data: dict[str, Any] = cfg.to_json() if cfg is not None else {"layers": []}
    data["export"] = {
        "opset": opset,
        "op": {"domain": OP_DOMAIN, "name": OP_NAME, "version": OP_VERSION},
        "token_prune_nodes": count_token_prune(model),
        "pruning_layers": list(encoder.pruning_layers),
        "folded_parameters": {
            str(rule.layer): dict(zip(("threshold", "bin_mask", "keep_ratio"), rule.op_params()))
            for rule in (cfg.layers if cfg is not None else ())
        },
        "outputs": [o.name for o in model.graph.output],
        "source": source,
    }
    if int8 is not None:
        data["export"]["int8"] = int8
    return data


def export_artifact(
    encoder: PrunedEncoder,
    model_dir: str | os.PathLike,
    output: str | os.PathLike,
    opset: int = MIN_OPSET,
    force: bool = False,
    int8: bool = False,
    optimize: bool = False,
    int8_setting: str = DEFAULT_INT8,
) -> Path:
    """Write an artifact dir atomically: built in a temp dir beside `output`, renamed at the end.

    `optimize`: onnxruntime's BERT fusions and the embedding rule (export.passes.optimize_pruned;
    a scoring layer's attention stays its ScoredAttention node). An
    unpruned encoder (config None) is then exported from the HF model itself and fully fused
    (export.baseline: Attention included), the baseline a practitioner would deploy.
    `int8`: dynamic INT8 quantization of the weight MatMul/Gemm nodes (export.quantize.to_int8) with
    `int8_setting` (export.quantize.INT8_SETTINGS: "portable" is correct on every x86-64 CPU).
    """
    check_output_dir(Path(output), force)
    passes: list[dict[str, Any]] = []
    int8_info = None
    if optimize and encoder.config is None:
        from onnx_tokprune.export.baseline import export_unpruned_optimized, quantize_unpruned_optimized

        model, report = export_unpruned_optimized(encoder.model, opset)
        passes.append(report.to_json())
        if int8:
            model, int8_info = quantize_unpruned_optimized(model, int8_setting)
        return _write_artifact(encoder, model, model_dir, output, opset, force, int8_info, passes)
    if optimize:
        from onnx_tokprune.export.passes import optimize_pruned

        hf = encoder.model.config
        model, reports = optimize_pruned(to_onnx(encoder, opset), hf.num_attention_heads, hf.hidden_size)
        passes.extend(report.to_json() for report in reports)
    else:
        model = to_onnx(encoder, opset)
    if int8:
        from onnx_tokprune.export.quantize import to_int8

        model, int8_info = to_int8(model, int8_setting)
    return _write_artifact(encoder, model, model_dir, output, opset, force, int8_info, passes)


def _write_artifact(encoder, model, model_dir, output, opset, force, int8_info, passes) -> Path:
    with atomic_output_dir(output, force) as tmp:
        onnx.save(model, str(tmp / MODEL_FILE))
        encoder.model.config.save_pretrained(tmp)
        copy_tokenizer_files(model_dir, tmp)
        data = manifest(encoder, model, opset, str(model_dir), int8_info)
        data["export"]["passes"] = passes
        write_json_atomic(tmp / CONFIG_NAME, data)
    return Path(output)


def copy_tokenizer_files(src_dir: str | os.PathLike, dst_dir: Path) -> None:
    for name in TOKENIZER_FILES:
        src = Path(src_dir) / name
        if src.is_file():
            shutil.copy2(src, dst_dir / name)
