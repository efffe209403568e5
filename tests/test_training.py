"""Seconds-long smoke run of the training side: finetune -> LTP -> export -> eval on a tiny model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import make_small_glue
from onnx_tokprune.cli import eval_command, export_command, main
from onnx_tokprune.training.constraint import GateState


@pytest.fixture(scope="module")
def small_glue(tmp_path_factory):
    """A GLUE directory with the first 48 rows of the real SST-2 train and dev files."""
    return make_small_glue(tmp_path_factory.mktemp("glue"))


def invoke(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def ltp_checkpoint(tiny_checkpoint, small_glue, tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    common = ["--task", "sst2", "--data-dir", small_glue, "--batch-size", 16, "--max-length", 64]
    invoke(["train", "finetune", "--model", tiny_checkpoint, "--output", out / "ft", "--epochs", 1, *common])
    result = invoke(
        ["train", "ltp", "--model", out / "ft", "--output", out / "ltp", "--lambda", 0.5, "--temperature", 1e-3,
         "--threshold-lr", 1e-3, "--soft-epochs", 2, "--hard-epochs", 1, *common]
    )
    assert "thresholds L" in result.output
    return out / "ltp"


@pytest.fixture(scope="module")
def top_checkpoint(ltp_checkpoint, small_glue, tmp_path_factory):
    """ToP from the fine-tuned tiny model (ltp_checkpoint's sibling `ft`); a high gate learning rate
    so the layer gates open within a few steps."""
    out = tmp_path_factory.mktemp("top") / "top"
    common = ["--task", "sst2", "--data-dir", small_glue, "--batch-size", 16, "--max-length", 64]
    result = invoke(
        ["train", "top", "--model", ltp_checkpoint.parent / "ft", "--output", out, "--target-flops", 0.4, "--bins", 5,
         "--reg-lr", 1.0, "--epochs", 6, "--warmup-epochs", 1, "--top-k", 5, "--rank-weight", 0.1, "--hard-epochs", 1, *common]
    )
    assert "open bins L" in result.output
    return out


def test_top_checkpoint_holds_binarised_gates(top_checkpoint):
    config = json.loads((top_checkpoint / "tokprune.json").read_text())
    assert config["method"] == "top" and config["rule"] == "rank_bins" and config["bin_rounding"] == "exact"
    assert config["score_normalizer"] == "length"
    provenance = config["provenance"]
    assert provenance["candidate_layers"] == [1, 2] and provenance["rank_layers"] == [1]
    assert {layer["layer"] for layer in config["layers"]} <= {1, 2}
    assert all(0 in layer["bin_mask"] and len(layer["bin_mask"]) == 5 for layer in config["layers"])
    # the gate state lives in its own typed file, not in the provenance
    assert not {"bin_log_alpha", "layer_log_alpha", "history", "lagrange"} & set(provenance)
    state = GateState.load(top_checkpoint)
    assert state.candidate_layers == [1, 2] and len(state.bin_log_alpha) == 2 and len(state.bin_log_alpha[0]) == 5
    assert state.target_flops == 0.4 and len(state.lagrange) == 2
    history = state.history
    assert history and history[-1]["target_flops"] == pytest.approx(0.4)
    assert abs(history[-1]["expected_flops"] - 0.4) < 0.15, "the Lagrangian did not pull FLOPs towards the target"


def test_top_export_has_one_node_per_pruning_layer_and_agrees(top_checkpoint, small_glue, tmp_path):
    config = json.loads((top_checkpoint / "tokprune.json").read_text())
    artifact, report = tmp_path / "art", tmp_path / "eval.json"
    assert CliRunner().invoke(export_command, ["--model", str(top_checkpoint), "--output", str(artifact)]).exit_code == 0
    manifest = json.loads((artifact / "tokprune_manifest.json").read_text())
    assert manifest["export"]["token_prune_nodes"] == len(config["layers"])
    assert manifest["export"]["pruning_layers"] == [layer["layer"] for layer in config["layers"]]
    result = CliRunner().invoke(
        eval_command,
        ["--model", str(top_checkpoint), "--artifact", str(artifact), "--task", "sst2", "--data-dir", str(small_glue), "--json", str(report)],
    )
    assert result.exit_code == 0, result.output
    assert "prediction agreement: 100.00%" in result.output


def test_match_flops_rematches_on_given_inputs(top_checkpoint, small_glue, tmp_path):
    out = tmp_path / "matched"
    data = small_glue / "SST-2" / "dev.tsv"
    result = invoke(["match-flops", "--model", top_checkpoint, "--data", data, "--output", out, "--target-flops", 0.6])
    assert "relative FLOPs on 48 inputs" in result.output
    config = json.loads((out / "tokprune.json").read_text())
    matched = config["provenance"]["flops_matching"]
    assert matched["samples"] == 48 and matched["target_flops"] == 0.6
    assert abs(matched["matched_flops"] - 0.6) <= abs(matched["binarized_flops"] - 0.6)
    assert (out / "model.safetensors").is_file() and config["method"] == "top"


def test_match_flops_needs_a_top_checkpoint(ltp_checkpoint, small_glue, tmp_path):
    result = CliRunner().invoke(
        main, ["match-flops", "--model", str(ltp_checkpoint), "--data", str(small_glue / "SST-2" / "dev.tsv"), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "tokprune-train top" in result.output and "Traceback" not in result.output


def test_ltp_checkpoint_has_learned_thresholds(ltp_checkpoint):
    config = json.loads((ltp_checkpoint / "tokprune.json").read_text())
    assert config["method"] == "ltp" and config["rule"] == "threshold"
    learned = config["provenance"]["learned_thresholds"]
    initial = {str(layer): 0.01 * (layer + 1) / 4 for layer in range(4)}
    assert set(learned) == set(initial)
    assert any(abs(learned[k] - initial[k]) > 1e-5 for k in learned), "thresholds did not move"
    assert all(layer["threshold"] > 0 for layer in config["layers"])


def test_export_and_eval_agree(ltp_checkpoint, small_glue, tmp_path):
    artifact = tmp_path / "art"
    result = CliRunner().invoke(export_command, ["--model", str(ltp_checkpoint), "--output", str(artifact)])
    assert result.exit_code == 0, result.output
    report = tmp_path / "eval.json"
    result = CliRunner().invoke(
        eval_command,
        ["--model", str(ltp_checkpoint), "--artifact", str(artifact), "--task", "sst2", "--data-dir", str(small_glue), "--json", str(report)],
    )
    assert result.exit_code == 0, result.output
    assert "prediction agreement: 100.00% of 48" in result.output
    rows = {r["source"]: r for r in json.loads(report.read_text())}
    assert set(rows) == {"pytorch-drop", "pytorch-mask", "onnxruntime"}
    drop = rows["pytorch-drop"]
    assert drop["counted_gflops"] == pytest.approx(drop["analytic_gflops"], rel=1e-9)
    assert rows["onnxruntime"]["analytic_gflops"] == pytest.approx(drop["analytic_gflops"], rel=1e-9)
    assert rows["onnxruntime"]["metrics"] == drop["metrics"]
    assert rows["onnxruntime"]["agreement_with_pytorch_drop"] == 1.0 and "agreement_with_pytorch_drop" not in drop
    assert rows["pytorch-mask"]["kept_tokens"] == drop["kept_tokens"]


def test_eval_of_unpruned_baseline_counts_full_flops(tiny_checkpoint, small_glue):
    result = CliRunner().invoke(eval_command, ["--model", str(tiny_checkpoint), "--task", "sst2", "--data-dir", str(small_glue)])
    assert result.exit_code == 0, result.output
    assert "| pytorch-drop | sst2 | 48 |" in result.output and "| 1.000 |" in result.output
    assert "pytorch-mask" not in result.output  # no tokprune.json: only the unpruned drop-mode run


def test_ltp_rejects_checkpoint_with_wrong_label_count(tiny_checkpoint, small_glue, tmp_path):
    import shutil

    from transformers import AutoConfig, BertForSequenceClassification

    bad = tmp_path / "three"
    config = AutoConfig.from_pretrained(tiny_checkpoint, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(bad)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tiny_checkpoint / name, bad / name)
    result = CliRunner().invoke(
        main, ["train", "ltp", "--model", str(bad), "--task", "sst2", "--output", str(tmp_path / "o"), "--data-dir", str(small_glue)]
    )
    assert result.exit_code != 0 and "classifies 3 labels but task sst2 has 2" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--task", "nope"], "nope"),
    (["--task", "sst2", "--lambda", "-1"], "lambda must be in [0, 10]"),
    (["--task", "sst2", "--temperature", "0"], "temperature must be in (0, 1]"),
    (["--task", "sst2", "--ce-weight", "0.5"], "a CE weight is for distillation: add --distill"),
    (["--task", "sst2", "--layers", "1,9"], "pruning layers [1, 9] must be within 0..3"),
    (["--task", "sst2", "--layers", "1,x"], "give layer indices separated by commas"),
])
def test_ltp_bad_arguments(tiny_checkpoint, tmp_path, args, message):
    result = CliRunner().invoke(main, ["train", "ltp", "--model", str(tiny_checkpoint), "--output", str(tmp_path / "o"), *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_ltp_can_start_from_calibrated_thresholds(ltp_checkpoint, small_glue, tmp_path):
    out = tmp_path / "ltp_cal"
    invoke(
        ["train", "ltp", "--model", ltp_checkpoint, "--output", out, "--init-flops", 0.6, "--soft-epochs", 1, "--hard-epochs", 1,
         "--task", "sst2", "--data-dir", small_glue, "--batch-size", 16, "--max-length", 64]
    )
    provenance = json.loads((out / "tokprune.json").read_text())["provenance"]
    initial = provenance["initial_thresholds"]
    assert provenance["init_flops"] == 0.6 and set(initial) == {"0", "1", "2", "3"}
    linear = [0.01 * (layer + 1) / 4 for layer in range(4)]
    assert [initial[str(layer)] for layer in range(4)] != pytest.approx(linear)


def test_ltp_prunes_only_at_its_layers(ltp_checkpoint, small_glue, tmp_path):
    """--layers 1,2: thresholds start on LTP's ramp at those layers only, only they learn, and the
    exported graph removes tokens there alone."""
    out = tmp_path / "ltp_layers"
    invoke(
        ["train", "ltp", "--model", ltp_checkpoint.parent / "ft", "--output", out, "--lambda", 0.5, "--temperature", 1e-3,
         "--threshold-lr", 1e-3, "--soft-epochs", 1, "--hard-epochs", 1, "--layers", "2,1",
         "--task", "sst2", "--data-dir", small_glue, "--batch-size", 16, "--max-length", 64]
    )
    config = json.loads((out / "tokprune.json").read_text())
    provenance = config["provenance"]
    assert provenance["layers"] == [1, 2]
    assert provenance["initial_thresholds"] == pytest.approx({"1": 0.005, "2": 0.0075})
    assert set(provenance["learned_thresholds"]) == {"1", "2"}
    assert {rule["layer"] for rule in config["layers"]} <= {1, 2} and config["layers"]
    artifact = tmp_path / "ltp_layers.onnx"
    result = CliRunner().invoke(export_command, ["--model", str(out), "--output", str(artifact)])
    assert result.exit_code == 0, result.output
    assert f"at layers {sorted(rule['layer'] for rule in config['layers'])}" in result.output


def test_ltp_distill_trains_against_the_starting_checkpoint(ltp_checkpoint, small_glue, tmp_path):
    """The fixture's run with --distill: same seed, data and schedule, only the loss differs, so the
    learned thresholds differ; the provenance records the distillation."""
    out = tmp_path / "ltp_kd"
    invoke(
        ["train", "ltp", "--model", ltp_checkpoint.parent / "ft", "--output", out, "--lambda", 0.5, "--temperature", 1e-3,
         "--threshold-lr", 1e-3, "--soft-epochs", 2, "--hard-epochs", 1, "--distill", "--ce-weight", 0.5,
         "--task", "sst2", "--data-dir", small_glue, "--batch-size", 16, "--max-length", 64]
    )
    distilled = json.loads((out / "tokprune.json").read_text())["provenance"]
    plain = json.loads((ltp_checkpoint / "tokprune.json").read_text())["provenance"]
    assert distilled["distill"] == {"temperature": 2.0, "ce_weight": 0.5} and plain["distill"] is None
    assert distilled["learned_thresholds"] != pytest.approx(plain["learned_thresholds"], abs=1e-7)
