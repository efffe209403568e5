"""The artifact contract (onnx_tokprune.artifact): names, the typed manifest, one reader and writer,
and a runtime that needs no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SST2_SENTENCES
from onnx_tokprune.artifact import (
    LEGACY_MANIFEST_FILE,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    ExportInfo,
    Manifest,
    kept_counts,
    kept_output_layer,
    kept_output_name,
    kept_outputs,
    original_positions,
    read_artifact,
    read_manifest,
)
from onnx_tokprune.cli import calibrate_command, export_command
from onnx_tokprune.errors import ArtifactError, ManifestError
from onnx_tokprune.io import OUTPUT_MARKERS

NO_TORCH = ("torch", "transformers", "datasets", "onnx", "onnxscript", "onnx_ir", "sklearn", "scipy", "matplotlib")
"""What a process using only the runtime must not import."""


@pytest.fixture(scope="module")
def artifact(tiny_checkpoint, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data") / "sentences.txt"
    data.write_text("\n".join(SST2_SENTENCES) + "\n")
    ckpt, out = tmp_path_factory.mktemp("cal") / "ckpt", tmp_path_factory.mktemp("art") / "art"
    runner = CliRunner()
    result = runner.invoke(calibrate_command, ["--model", str(tiny_checkpoint), "--data", str(data), "--keep", "0.5", "--layers", "1,2", "--output", str(ckpt)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(export_command, ["--model", str(ckpt), "--output", str(out), "--optimize"])
    assert result.exit_code == 0, result.output
    return out


def test_kept_output_names_round_trip_and_sort_by_layer():
    assert kept_output_name(3) == "kept_index_3" and kept_output_layer("kept_index_3") == 3
    assert kept_output_layer("logits") is None and kept_output_layer("kept_index_x") is None and kept_output_layer("kept_index_") is None
    assert kept_outputs(["kept_index_10", "logits", "kept_index_2"]) == [(2, "kept_index_2"), (10, "kept_index_10")]
    outputs = {"logits": np.zeros((2, 2)), "kept_index_10": np.array([[0, 1], [0, -1]]), "kept_index_2": np.array([[0, 2, 3], [0, 1, -1]])}
    assert kept_counts(outputs) == {2: 5.0, 10: 3.0}
    # layer 10's kept_index points into what layer 2 kept: its positions 0 and 1 are input tokens 0 and 2
    composed = original_positions(outputs)
    np.testing.assert_array_equal(composed["kept_index_10"], [[0, 2], [0, -1]])


def test_manifest_is_its_own_typed_versioned_file(artifact):
    files = {p.name for p in artifact.iterdir()}
    assert MANIFEST_FILE in files and LEGACY_MANIFEST_FILE not in files and "config.json" in OUTPUT_MARKERS
    data = json.loads((artifact / MANIFEST_FILE).read_text())
    assert set(data) == {"version", "pruning", "export"} and data["version"] == MANIFEST_VERSION
    found = read_artifact(artifact)
    manifest = found.manifest
    assert manifest.pruned and manifest.pruning.rule == "threshold" and manifest.pruning.pruning_layers == (1, 2)
    assert manifest.export.architecture == "bert" and manifest.export.pruning_layers == (1, 2)
    assert manifest.export.outputs == ("logits", "kept_index_1", "kept_index_2")
    assert [p.name for p in manifest.export.passes] == ["ort_transformer_fusions", "embed_layer_norm_fusion"]
    assert Manifest.from_json(manifest.to_json()) == manifest
    # config.json carries every field, defaults included, for readers without transformers
    assert {"hidden_size", "intermediate_size", "num_attention_heads", "max_position_embeddings", "id2label"} <= set(found.hf_config)


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d.update(version=MANIFEST_VERSION + 1), "newer than this onnx_tokprune reads"),
    (lambda d: d.update(version="1"), "version must be a positive integer"),
    (lambda d: d["export"].pop("opset"), "export.opset is missing"),
    (lambda d: d["export"].update(pruning_layers=[-1]), "export.pruning_layers must list layer indices"),
    (lambda d: d["export"].update(passes=[{"counts": {}}]), "export.passes must be a list"),
    (lambda d: d["pruning"].update(rule="magic"), "pruning: rule 'magic' is unknown"),
    (lambda d: d.update(export=[]), "export must be a JSON object"),
])
def test_a_malformed_manifest_is_one_line_naming_the_field(artifact, tmp_path, change, fragment):
    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    data = json.loads((broken / MANIFEST_FILE).read_text())
    change(data)
    (broken / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=fragment) as info:
        read_artifact(broken)
    assert "\n" not in str(info.value) and isinstance(info.value, ArtifactError)


def test_an_artifact_written_before_the_manifest_had_its_own_file_still_opens(artifact, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(artifact, old)
    data = json.loads((old / MANIFEST_FILE).read_text())
    export = {k: v for k, v in data["export"].items() if k != "architecture"}  # older manifests had no architecture
    (old / MANIFEST_FILE).unlink()
    (old / LEGACY_MANIFEST_FILE).write_text(json.dumps({**data["pruning"], "export": export}))
    manifest = read_manifest(old)
    assert manifest.pruning == read_manifest(artifact).pruning and manifest.export.pruning_layers == (1, 2)
    (old / LEGACY_MANIFEST_FILE).write_text(json.dumps(data["pruning"]))  # a checkpoint's pruning config is not a manifest
    with pytest.raises(ManifestError, match="is a pruning config, not an export manifest"):
        read_manifest(old)


def test_export_info_needs_no_optional_fields():
    export = ExportInfo(opset=17, source="s", architecture="bert", pruning_layers=(), outputs=("logits",), token_prune_nodes=0)
    assert not Manifest(export).pruned and Manifest.from_json(Manifest(export).to_json()) == Manifest(export)


def test_the_runtime_classifies_where_torch_cannot_be_imported(artifact):
    """An application needs onnxruntime and tokenizers only: open_artifact(...).classify, the kept
    positions and the survival lines run in a process where importing torch (and the other heavy
    libraries) fails."""
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys

        BLOCKED = {NO_TORCH!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
        from onnx_tokprune.data.text import TextExample
        from onnx_tokprune.runtime import open_artifact, original_positions
        from onnx_tokprune.runtime.survival import token_survival

        session = open_artifact(sys.argv[1], threads=1, kernel_library=False)
        result = session.classify(["a gorgeous , witty , seductive movie .", "it 's slow -- very , very slow ."])
        outputs = session.run(session.text_encoder([TextExample("a gorgeous , witty , seductive movie .")]))
        positions = original_positions(outputs)
        survival = token_survival(session, "a gorgeous , witty , seductive movie .")
        loaded = sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({{"result": result, "layers": sorted(positions), "lines": survival.lines(), "loaded": loaded}}))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(artifact)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert [r["label"] for r in out["result"]] and all(0 < r["score"] <= 1 for r in out["result"])
    assert out["layers"] == ["kept_index_1", "kept_index_2"] and out["lines"][0].startswith("input (")
