"""The command line: happy path on a tiny checkpoint, and one clear line for every bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import SST2_SENTENCES, assert_one_line_error
from onnx_tokprune.cli import calibrate_command, export_command, main, parity_command
from onnx_tokprune.runtime import open_artifact

SENTENCES = SST2_SENTENCES


def run(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def sentences_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    return path


@pytest.fixture(scope="module")
def calibrated(tiny_checkpoint, sentences_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "ckpt"
    result = run(calibrate_command, ["--model", tiny_checkpoint, "--data", sentences_file, "--keep", "0.5", "--output", out])
    assert result.exit_code == 0, result.output
    return out


def test_calibrate_export_parity_classify(calibrated, sentences_file, tmp_path):
    config = json.loads((calibrated / "tokprune.json").read_text())
    assert config["rule"] == "threshold" and [r["layer"] for r in config["layers"]] == [1, 2]
    assert config["provenance"]["measured_kept_fraction"]["2"] == pytest.approx(0.5, abs=0.1)
    artifact = tmp_path / "art"
    result = run(export_command, ["--model", calibrated, "--output", artifact])
    assert result.exit_code == 0, result.output
    assert "2 TokenPrune node(s)" in result.output
    manifest = json.loads((artifact / "tokprune_manifest.json").read_text())
    assert manifest["export"]["token_prune_nodes"] == 2 and manifest["export"]["opset"] == 17
    assert {"model.onnx", "config.json", "tokenizer.json", "tokprune_manifest.json"} <= {p.name for p in artifact.iterdir()}
    result = run(parity_command, ["--model", calibrated, "--artifact", artifact, "--data", sentences_file, "--batch-sizes", "1,4"])
    assert result.exit_code == 0, result.output
    assert "parity OK on 10 sentences" in result.output
    labels = open_artifact(artifact).classify(SENTENCES[:3])
    assert len(labels) == 3 and all(0.5 <= item["score"] <= 1 for item in labels)


def test_group_lists_commands():
    result = run(main, ["--help"])
    assert result.exit_code == 0
    for name in ("calibrate", "export", "parity", "bench"):
        assert name in result.output


def test_export_missing_dir(tmp_path):
    assert_one_line_error(run(export_command, ["--model", tmp_path / "nope"]), "nope not found")


def test_export_dir_without_config_json(tmp_path):
    assert_one_line_error(run(export_command, ["--model", tmp_path]), "has no config.json")


def test_export_dir_without_tokprune_json(tiny_checkpoint, tmp_path):
    assert_one_line_error(run(export_command, ["--model", tiny_checkpoint, "--output", tmp_path / "a"]), "tokprune.json")
    assert not (tmp_path / "a").exists()


def test_export_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert_one_line_error(run(export_command, ["--model", tmp_path]), "'gpt2' is not supported")


def test_export_opset_too_low(calibrated, tmp_path):
    assert_one_line_error(run(export_command, ["--model", calibrated, "--opset", "16", "--output", tmp_path / "a"]), "opset 16")
    assert not (tmp_path / "a").exists()


def test_export_refuses_existing_output_without_force(calibrated, tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "tokprune.json").write_text("{}")  # an earlier tokprune output: --force may replace it
    assert_one_line_error(run(export_command, ["--model", calibrated, "--output", out]), "--force")
    assert (out / "keep.txt").read_text() == "mine"
    result = run(export_command, ["--model", calibrated, "--output", out, "--force"])
    assert result.exit_code == 0 and (out / "model.onnx").is_file() and not (out / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_tokprune_json_names_the_key(calibrated, tmp_path):
    broken = tmp_path / "ckpt"
    shutil.copytree(calibrated, broken)
    data = json.loads((broken / "tokprune.json").read_text())
    data["layers"][0]["threshhold"] = 0.1
    (broken / "tokprune.json").write_text(json.dumps(data))
    assert_one_line_error(run(export_command, ["--model", broken, "--output", tmp_path / "a"]), "threshhold")


def test_parity_empty_data_file(calibrated, tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n")
    artifact = tmp_path / "art"
    assert run(export_command, ["--model", calibrated, "--output", artifact]).exit_code == 0
    assert_one_line_error(run(parity_command, ["--model", calibrated, "--artifact", artifact, "--data", empty]), "is empty")


def test_text_longer_than_max_length(calibrated, tmp_path):
    long = tmp_path / "long.txt"
    long.write_text("short one .\n" + " ".join(["word"] * 100) + "\n")
    artifact = tmp_path / "art"
    assert run(export_command, ["--model", calibrated, "--output", artifact]).exit_code == 0
    assert_one_line_error(
        run(parity_command, ["--model", calibrated, "--artifact", artifact, "--data", long]), "example 1 has 102 tokens", "64"
    )


def test_calibrate_needs_exactly_one_target(tiny_checkpoint, sentences_file, tmp_path):
    result = run(calibrate_command, ["--model", tiny_checkpoint, "--data", sentences_file, "--output", tmp_path / "c"])
    assert result.exit_code != 0 and "exactly one of --keep or --flops" in result.output
    result = run(
        calibrate_command,
        ["--model", tiny_checkpoint, "--data", sentences_file, "--output", tmp_path / "c", "--keep", "1.5"],
    )
    assert_one_line_error(result, "keep must be in (0, 1]")
    assert not (tmp_path / "c").exists()


def test_calibrate_flops_target_is_met(tiny_checkpoint, sentences_file, tmp_path):
    out = tmp_path / "c"
    result = run(calibrate_command, ["--model", tiny_checkpoint, "--data", sentences_file, "--output", out, "--flops", "0.8", "--rule", "top_k"])
    assert result.exit_code == 0, result.output
    measured = json.loads((out / "tokprune.json").read_text())["provenance"]["measured_relative_flops"]
    assert measured == pytest.approx(0.8, abs=0.05)
