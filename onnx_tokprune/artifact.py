"""The artifact contract: what `tokprune-export` writes and everything else reads (no torch needed).

An artifact directory holds
- `model.onnx`: inputs `input_ids` and those of MODEL_INPUTS the architecture takes; outputs `logits`
  (a span head: `start_logits`, `end_logits`) then `kept_index_<layer>` per pruning layer, in layer order: TokenPrune's kept_index, positions in
  the sequence *entering* that layer, -1 on padding (`original_positions` composes them);
- `config.json`: the Hugging Face model config (shapes, labels);
- the checkpoint's tokenizer files, `tokenizer.json` at least;
- `tokprune_manifest.json`: the `Manifest`, a versioned record of the pruning config and of what the
  export produced. It is not the checkpoint's `tokprune.json` (the pruning config alone).

`read_artifact` and `write_artifact` are the only code that touches these files.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnx_tokprune.config import ConfigError, PruneConfig
from onnx_tokprune.errors import ArtifactError, ManifestError
from onnx_tokprune.io import atomic_output_dir, read_json, write_json_atomic

if TYPE_CHECKING:
    import onnx

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "tokprune_manifest.json"
LEGACY_MANIFEST_FILE = "tokprune.json"
"""Artifacts written before the manifest had its own file kept it here, beside the pruning config's keys."""
HF_CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "vocab.json", "merges.txt")
"""The checkpoint's tokenizer files an artifact carries (those that exist)."""
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""Every input an artifact graph may take; each architecture takes `input_ids` and a subset of the rest."""
LOGITS_OUTPUT = "logits"
SPAN_OUTPUTS = ("start_logits", "end_logits")
"""A span (question-answering) graph's outputs in place of `logits`: [B,S] at every input position."""
HEADS = {"sequence": (LOGITS_OUTPUT,), "span": SPAN_OUTPUTS}
"""The graph outputs before the kept_index ones, per head kind (the manifest's export.head)."""
CLS_ONLY_PASS = "cls_only_last_layer"
"""The export pass that runs the last layer for the CLS row only (PrunedEncoder cls_only)."""
HEAD_CLASSES = {"sequence": "ForSequenceClassification", "span": "ForQuestionAnswering"}
"""The head kinds PrunedEncoder runs, by the suffix of the Hugging Face class: "sequence"
(classification logits from the CLS row) and "span" (extractive QA: start/end logits at every
position, pruned tokens restored)."""


def head_kind(architectures: Any) -> str | None:
    """The HEAD_CLASSES kind of a config's `architectures` list, None when it names no supported head."""
    names = [a for a in architectures if isinstance(a, str)] if isinstance(architectures, list) else []
    return next((kind for kind, suffix in HEAD_CLASSES.items() for a in names if a.endswith(suffix)), None)
KEPT_PREFIX = "kept_index_"
MANIFEST_VERSION = 1
_REEXPORT = "re-export the artifact (tokprune-export)"


def kept_output_name(layer: int) -> str:
    """The graph output holding pruning layer `layer`'s kept_index."""
    return f"{KEPT_PREFIX}{layer}"


def kept_output_layer(name: str) -> int | None:
    """The pruning layer of a `kept_index_<layer>` output name; None for any other name."""
    if not name.startswith(KEPT_PREFIX):
        return None
    suffix = name[len(KEPT_PREFIX):]
    return int(suffix) if suffix.isdigit() else None


def kept_outputs(names: Iterable[str]) -> list[tuple[int, str]]:
    """(layer, output name) of every kept_index output among `names`, in layer order."""
    found = ((kept_output_layer(n), n) for n in names)
    return sorted((layer, n) for layer, n in found if layer is not None)


def kept_counts(outputs: Mapping[str, Any]) -> dict[int, float]:
    """Tokens kept per pruning layer (summed over the batch) from a run's outputs."""
    return {layer: float((outputs[name] >= 0).sum()) for layer, name in kept_outputs(outputs)}


def original_positions(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Compose a run's `kept_index_<l>` outputs into positions in the input text.

    Each layer's kept_index points into the sequence that entered it; the result maps every
    `kept_index_<l>` name to [B,K_l] original positions (-1 = padding).
    """
    import numpy as np

    result: dict[str, Any] = {}
    previous = None
    for _, name in kept_outputs(outputs):
        index = outputs[name]
        taken = index if previous is None else np.take_along_axis(previous, np.maximum(index, 0), axis=1)
        previous = np.where(index >= 0, taken, -1)
        result[name] = previous
    return result


@dataclass(frozen=True)
class PassRecord:
    """One graph pass the export ran: its name and, per op type it produced, how many nodes."""

    name: str
    counts: dict[str, int] = field(default_factory=dict)
    refused: tuple[str, ...] = ()
    """Why a rewrite rule did not fire where its pattern matched (its check's reasons), if it did not."""

    def describe(self) -> str:
        """"Attention 4, BiasGelu 6", or "did not fire" (with the rule's reasons when it refused)."""
        done = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        if done:
            return done
        return "did not fire" + (f" ({'; '.join(self.refused)})" if self.refused else "")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "counts": dict(self.counts)}
        if self.refused:
            data["refused"] = list(self.refused)
        return data


@dataclass(frozen=True)
class ExportInfo:
    """What the export produced."""

    opset: int
    source: str
    """The checkpoint directory (or hub name) exported."""
    architecture: str
    """The config's model_type."""
    pruning_layers: tuple[int, ...]
    outputs: tuple[str, ...]
    token_prune_nodes: int
    op: dict[str, Any] = field(default_factory=dict)
    """The TokenPrune op's domain, name and version."""
    folded_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per pruning layer: the (threshold, bin_mask, keep_ratio) its TokenPrune node holds."""
    passes: tuple[PassRecord, ...] = ()
    int8: dict[str, Any] | None = None
    """The INT8 setting and quantization counts of an INT8 export (export.quantize), else None."""
    head: str = "sequence"
    """The head kind (HEADS): "sequence" classification logits, or "span" start/end logits."""

    @property
    def cls_only_last(self) -> bool:
        """Whether the graph's last layer runs for the CLS row only (the CLS_ONLY_PASS fired)."""
        return any(p.name == CLS_ONLY_PASS and p.counts for p in self.passes)

    def describe(self) -> str:
        """"pruning layers [1, 3]; ort_transformer_fusions: Attention 4, ..." for reports."""
        passes = "; ".join(f"{p.name}: {p.describe()}" for p in self.passes)
        return f"pruning layers {list(self.pruning_layers)}; " + (passes or "no graph passes (export without --optimize)")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "opset": self.opset, "source": self.source, "architecture": self.architecture,
            "pruning_layers": list(self.pruning_layers), "outputs": list(self.outputs),
            "token_prune_nodes": self.token_prune_nodes, "op": dict(self.op),
            "folded_parameters": dict(self.folded_parameters), "passes": [p.to_json() for p in self.passes],
            "head": self.head,
        }
        if self.int8 is not None:
            data["int8"] = dict(self.int8)
        return data


@dataclass(frozen=True)
class Manifest:
    """The artifact's record: the pruning config it was exported with (None: unpruned) and the export."""

    export: ExportInfo
    pruning: PruneConfig | None = None
    version: int = MANIFEST_VERSION

    @property
    def pruned(self) -> bool:
        return bool(self.export.pruning_layers)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "pruning": None if self.pruning is None else self.pruning.to_json(), "export": self.export.to_json()}

    @classmethod
    def from_json(cls, data: Any, where: str = MANIFEST_FILE) -> Manifest:
        """Validate a parsed manifest; ManifestError (one line, naming the field) otherwise."""
        hint = "re-export the artifact (tokprune-export)"
        if not isinstance(data, dict):
            raise ManifestError(f"{where} must hold a JSON object: {hint}")
        version = data.get("version")
        if type(version) is not int or version < 1:
            raise ManifestError(f"{where}: version must be a positive integer, got {version!r}: {hint}")
        if version > MANIFEST_VERSION:
            raise ManifestError(f"{where}: manifest version {version} is newer than this onnx_tokprune reads ({MANIFEST_VERSION}): upgrade onnx_tokprune")
        pruning = data.get("pruning")
        try:
            config = None if pruning is None else PruneConfig.from_json(pruning)
        except ConfigError as e:
            raise ManifestError(f"{where}: pruning: {e}") from None
        return cls(export=_export_info(data.get("export"), where, hint), pruning=config, version=version)

    @classmethod
    def from_legacy(cls, data: Any, where: str) -> Manifest:
        """A manifest written before it had its own file: the pruning config's keys plus `export`."""
        if not isinstance(data, dict) or not isinstance(data.get("export"), dict):
            raise ManifestError(f"{where} is a pruning config, not an export manifest: pass a directory written by tokprune-export")
        rest = {k: v for k, v in data.items() if k != "export"}
        pruning = rest if rest.get("layers") else None
        export = {"architecture": "", **data["export"]}
        return cls.from_json({"version": 1, "pruning": pruning, "export": export}, where)


_EXPORT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "opset": int, "source": str, "architecture": str, "pruning_layers": list, "outputs": list, "token_prune_nodes": int,
}


def _export_info(data: Any, where: str, hint: str) -> ExportInfo:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: export must be a JSON object: {hint}")
    for key, kind in _EXPORT_FIELDS.items():
        if key not in data:
            raise ManifestError(f"{where}: export.{key} is missing: {hint}")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise ManifestError(f"{where}: export.{key} must be a {kind.__name__}, got {data[key]!r}: {hint}")
    layers = data["pruning_layers"]
    if any(type(x) is not int or x < 0 for x in layers):
        raise ManifestError(f"{where}: export.pruning_layers must list layer indices, got {layers!r}: {hint}")
    passes = data.get("passes", [])
    if not isinstance(passes, list) or any(
        not isinstance(p, dict) or not isinstance(p.get("name"), str) or not isinstance(p.get("counts", {}), dict)
        or not isinstance(p.get("refused", []), list) for p in passes
    ):
        raise ManifestError(f"{where}: export.passes must be a list of {{'name', 'counts'}} objects: {hint}")
    int8 = data.get("int8")
    if int8 is not None and not isinstance(int8, dict):
        raise ManifestError(f"{where}: export.int8 must be an object or absent: {hint}")
    head = data.get("head", "sequence")
    if head not in HEADS:
        raise ManifestError(f"{where}: export.head must be one of {sorted(HEADS)}, got {head!r}: {hint}")
    return ExportInfo(
        opset=data["opset"], source=data["source"], architecture=data["architecture"], pruning_layers=tuple(layers),
        outputs=tuple(data["outputs"]), token_prune_nodes=data["token_prune_nodes"], op=dict(data.get("op") or {}),
        folded_parameters=dict(data.get("folded_parameters") or {}),
        passes=tuple(
            PassRecord(p["name"], {str(k): int(v) for k, v in p.get("counts", {}).items()}, tuple(map(str, p.get("refused", []))))
            for p in passes
        ),
        int8=int8,
        head=head,
    )


@dataclass(frozen=True)
class Artifact:
    """An artifact directory whose files are all there (nothing loaded into onnxruntime yet)."""

    path: Path
    manifest: Manifest
    hf_config: dict[str, Any]

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def tokenizer_file(self) -> Path:
        return self.path / TOKENIZER_FILE


def read_manifest(directory: str | os.PathLike) -> Manifest:
    """The manifest of an artifact directory (or of one written before it had its own file)."""
    path = Path(directory)
    if (path / MANIFEST_FILE).is_file():
        return Manifest.from_json(read_json(path / MANIFEST_FILE, ManifestError, "not found", _REEXPORT), str(path / MANIFEST_FILE))
    legacy = path / LEGACY_MANIFEST_FILE
    if legacy.is_file():
        return Manifest.from_legacy(read_json(legacy, ManifestError, "not found", _REEXPORT), str(legacy))
    raise ManifestError(f"{path} has no {MANIFEST_FILE} (the manifest tokprune-export writes): pass a directory written by tokprune-export")


def read_artifact(directory: str | os.PathLike) -> Artifact:
    """Check an artifact directory's files and read its manifest and config.json; ArtifactError (one
    line) when a file is missing or malformed. Loads no model."""
    path = Path(directory)
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "not found"
        raise ArtifactError(f"{path} {state}: pass an artifact directory written by tokprune-export")
    if not (path / MODEL_FILE).is_file():
        raise ArtifactError(f"{path} has no {MODEL_FILE}: pass a directory written by tokprune-export")
    manifest = read_manifest(path)
    if not (path / HF_CONFIG_FILE).is_file():
        raise ArtifactError(f"{path} has no {HF_CONFIG_FILE}: re-export it (tokprune-export)")
    hf_config = read_json(path / HF_CONFIG_FILE, ArtifactError, "not found", _REEXPORT)
    if not isinstance(hf_config, dict):
        raise ArtifactError(f"{path / HF_CONFIG_FILE} must hold a JSON object (the model config): re-export the artifact (tokprune-export)")
    if not (path / TOKENIZER_FILE).is_file():
        raise ArtifactError(f"{path} has no {TOKENIZER_FILE}: copy the checkpoint's tokenizer.json there, or re-export it")
    return Artifact(path, manifest, hf_config)


def write_artifact(
    output: str | os.PathLike, model: onnx.ModelProto, hf_config: Mapping[str, Any], tokenizer_dir: str | os.PathLike,
    manifest: Manifest, force: bool = False,
) -> Path:
    """Write an artifact directory atomically (io.atomic_output_dir): the graph, config.json, the
    tokenizer files found in `tokenizer_dir`, the manifest."""
    import onnx

    with atomic_output_dir(output, force) as tmp:
        onnx.save(model, str(tmp / MODEL_FILE))
        write_json_atomic(tmp / HF_CONFIG_FILE, dict(hf_config))
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.is_file():
                shutil.copy2(src, tmp / name)
        write_json_atomic(tmp / MANIFEST_FILE, manifest.to_json())
    return Path(output)
