"""Protecting a pair's second text (tokprune.json `protect: "second_text"`): calibration keeps every
token of type 1 and meets the FLOPs target with them counted; the exported graph keeps them too (its
kept_index outputs hold every type-1 position, with the ScoredAttention function, the compiled kernel,
the fused and the INT8 graph), in parity with PyTorch; models without token types and QA refuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import SST2_SENTENCES, assert_one_line_error
from onnx_tokprune.artifact import original_positions
from onnx_tokprune.cli import main
from onnx_tokprune.config import PruneConfig
from onnx_tokprune.data.text import TextExample
from onnx_tokprune.errors import ConfigError
from onnx_tokprune.modeling import load_pruned, wrap
from onnx_tokprune.runtime import open_artifact

SENTENCES = SST2_SENTENCES[:8]
PAIRS = [(SENTENCES[i], SENTENCES[(i + 3) % len(SENTENCES)]) for i in range(len(SENTENCES))]


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def pairs_csv(path, pairs=PAIRS):
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["premise", "hypothesis", "label"])
        writer.writerows([a, b, i % 2] for i, (a, b) in enumerate(pairs))
    return path


PAIR_COLUMNS = ["--text-column", "premise", "--text-pair-column", "hypothesis", "--label-column", "label"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return pairs_csv(tmp_path_factory.mktemp("pairs") / "pairs.csv")


def calibrate(tiny_checkpoint, data, out, *extra):
    return run(["calibrate", "--model", tiny_checkpoint, "--data", data, *PAIR_COLUMNS, "--output", out, *extra])


@pytest.fixture(scope="module")
def protected(tiny_checkpoint, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "protected"
    result = calibrate(tiny_checkpoint, data, out, "--flops", "0.8", "--protect-second-text")
    assert result.exit_code == 0, result.output
    assert "(second texts kept)" in result.output
    return out


@pytest.fixture(scope="module")
def unprotected(tiny_checkpoint, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "plain"
    assert calibrate(tiny_checkpoint, data, out, "--flops", "0.8").exit_code == 0
    return out


def second_positions(text_encoder, example: TextExample) -> set[int]:
    _, types = text_encoder.token_ids([example])[0]
    return {i for i, t in enumerate(types) if t == 1}


def test_config_round_trip_and_validation():
    data = {"rule": "threshold", "protect": "second_text", "layers": [{"layer": 1, "threshold": 0.01}]}
    config = PruneConfig.from_json(data)
    assert config.protect == "second_text" and config.to_json()["protect"] == "second_text"
    assert "protect" not in PruneConfig.from_json({k: v for k, v in data.items() if k != "protect"}).to_json()
    with pytest.raises(ConfigError, match="protect 'question' is unknown"):
        PruneConfig.from_json({**data, "protect": "question"})
    with pytest.raises(ConfigError, match="1 token type"):
        config.check_model(6, type_vocab_size=1)


def test_calibration_keeps_second_texts_and_counts_them_in_flops(protected, unprotected):
    config = json.loads((protected / "tokprune.json").read_text())
    assert config["protect"] == "second_text"
    assert config["provenance"]["protected_tokens"] > 0
    # the FLOPs target is met with the protected tokens counted (calibration data = these pairs)
    assert abs(config["provenance"]["measured_relative_flops"] - 0.8) < 0.05
    plain = json.loads((unprotected / "tokprune.json").read_text())
    assert "protect" not in plain and abs(plain["provenance"]["measured_relative_flops"] - 0.8) < 0.05
    encoder, bare = load_pruned(protected, "drop"), load_pruned(unprotected, "drop")
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    text_encoder = TextEncoder.from_dir(protected)
    lost = 0
    for a, b in PAIRS:
        example = TextExample(a, b)
        second = second_positions(text_encoder, example)
        feeds = {k: torch.from_numpy(v) for k, v in text_encoder([example]).items()}
        with torch.no_grad():
            kept = encoder(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]).kept
            plain_kept = bare(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]).kept
        for row in kept:
            assert second <= set(torch.nonzero(row[0]).flatten().tolist())
        lost += len(second - set(torch.nonzero(plain_kept[-1][0]).flatten().tolist()))
        assert len(torch.nonzero(kept[-1][0])) < len(feeds["input_ids"][0]), "protection kept every token"
    assert lost > 0, "without protection every second-text token survives: the test shows nothing"


@pytest.mark.parametrize("options", [[], ["--optimize"], ["--int8"]], ids=["plain", "optimized", "int8"])
def test_exported_graph_keeps_second_texts_in_parity(protected, data, tmp_path, options):
    artifact = tmp_path / "art"
    result = run(["export", "--model", protected, "--output", artifact, *options])
    assert result.exit_code == 0, result.output
    manifest = json.loads((artifact / "tokprune_manifest.json").read_text())
    assert manifest["pruning"]["protect"] == "second_text"
    session = open_artifact(artifact, threads=1)
    examples = [TextExample(a, b) for a, b in PAIRS]
    positions = original_positions(session.run(session.text_encoder(examples)))
    for row, example in enumerate(examples):
        second = second_positions(session.text_encoder, example)
        for layer in (1, 2):
            assert second <= {int(p) for p in positions[f"kept_index_{layer}"][row] if p >= 0}
    if "--int8" in options:
        return  # INT8 logits differ from fp32 PyTorch by design; its kept sets are checked above
    report = tmp_path / "parity.json"
    result = run(["parity", "--model", protected, "--artifact", artifact, "--data", data, *PAIR_COLUMNS,
                  "--batch-sizes", "1,3,8", "--report", report])
    assert result.exit_code == 0, result.output
    comparisons = json.loads(report.read_text())["comparisons"]
    torch_vs_ort = [c for c in comparisons if c["name"] == "pytorch-drop vs onnxruntime"]
    assert len(torch_vs_ort) == 3
    for c in torch_vs_ort:
        assert c["max_abs_logit_diff"] <= 1e-4 and not c["ambiguous_examples"]
        assert c["kept_agreement"] and all(agreement == 1.0 for agreement in c["kept_agreement"].values())


def test_compiled_kernel_keeps_second_texts(protected, tmp_path, kernel_library):
    artifact = tmp_path / "art"
    assert run(["export", "--model", protected, "--output", artifact]).exit_code == 0
    examples = [TextExample(a, b) for a, b in PAIRS]
    reference = open_artifact(artifact, threads=1)
    compiled = open_artifact(artifact, threads=1, kernel_library=kernel_library)
    feeds = reference.text_encoder(examples)
    a, b = reference.run(feeds), compiled.run(feeds)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5)


def test_soft_and_gate_modes_give_protected_tokens_full_weight(protected):
    encoder = load_pruned(protected, "drop")
    config = encoder.config
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    text_encoder = TextEncoder.from_dir(protected)
    example = TextExample(*PAIRS[0])
    second = sorted(second_positions(text_encoder, example))
    feeds = {k: torch.from_numpy(v) for k, v in text_encoder([example]).items()}
    soft = wrap(encoder.model, config, "soft", temperature=1e-3)
    with torch.no_grad():
        out = soft(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"])
    for weight in out.kept:
        assert torch.all(weight[0, second] == 1.0)
    with pytest.raises(ValueError, match="pass token_type_ids"):
        soft(feeds["input_ids"], feeds["attention_mask"])


def test_refusals(tiny_checkpoint, data, tmp_path):
    single = tmp_path / "single.txt"
    single.write_text("\n".join(SENTENCES) + "\n")
    out = tmp_path / "x"
    result = run(["calibrate", "--model", tiny_checkpoint, "--data", single, "--keep", "0.5", "--protect-second-text", "--output", out])
    assert result.exit_code == 1, result.output
    assert_one_line_error(result, "no calibration input has a second text")
    assert not out.exists()
    result = calibrate(tiny_checkpoint, data, out, "--keep", "0.5", "--rule", "top_k", "--protect-second-text")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result, "threshold rule only", "--rule threshold")
    assert not out.exists()


def test_models_without_token_types_refuse(tmp_path, minilm_tokenizer):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    path = tmp_path / "roberta"
    config = RobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=80, type_vocab_size=1)
    RobertaForSequenceClassification(config).save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    data = pairs_csv(tmp_path / "pairs.csv")
    out = tmp_path / "x"
    result = calibrate(path, data, out, "--keep", "0.5", "--protect-second-text")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result, "1 token type(s)", "remove 'protect'")
    assert not out.exists()


def test_ltp_trains_with_the_second_text_protected(tiny_checkpoint, data, tmp_path):
    train = pairs_csv(tmp_path / "train.csv", PAIRS * 2)
    out = tmp_path / "ltp"
    training = ["--batch-size", 8, "--max-length", 64, "--soft-epochs", 1, "--hard-epochs", 1, "--init-flops", 0.8, "--layers", "1,2"]
    common = ["--model", tiny_checkpoint, "--validation-file", data, *PAIR_COLUMNS, *training]
    result = run(["train", "ltp", "--train-file", train, "--output", out, "--protect-second-text", *common])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "tokprune.json").read_text())
    assert config["protect"] == "second_text" and config["method"] == "ltp"
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    encoder, text_encoder = load_pruned(out, "drop"), TextEncoder.from_dir(out)
    for a, b in PAIRS:
        example = TextExample(a, b)
        feeds = {k: torch.from_numpy(v) for k, v in text_encoder([example]).items()}
        with torch.no_grad():
            kept = encoder(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]).kept
        for row in kept:
            assert second_positions(text_encoder, example) <= set(torch.nonzero(row[0]).flatten().tolist())
    single = tmp_path / "single.csv"
    single.write_text("premise,label\n" + "".join(f"{a},{i % 2}\n" for i, (a, _) in enumerate(PAIRS * 2) if "," not in a))
    columns = ["--text-column", "premise", "--label-column", "label"]
    result = run(["train", "ltp", "--model", tiny_checkpoint, "--train-file", single, "--validation-file", single, *columns,
                  "--output", tmp_path / "none", "--protect-second-text", *training])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]  # after the data's progress bars
    assert last.startswith("Error:") and "the training inputs have no second text" in last, result.stderr
    assert not (tmp_path / "none").exists()


def test_frontier_gives_protected_checkpoints_their_own_curve(protected, unprotected):
    from onnx_tokprune.frontier import classify_checkpoint

    assert classify_checkpoint(protected, 4) == ("calibrated, 2nd text kept", True)
    assert classify_checkpoint(unprotected, 4) == ("calibrated", True)


def test_top_trains_with_the_second_text_ranked_first_in_parity(tiny_checkpoint, data, tmp_path):
    train = pairs_csv(tmp_path / "train.csv", PAIRS * 5)
    out, artifact = tmp_path / "top", tmp_path / "top-onnx"
    result = run(["train", "top", "--model", tiny_checkpoint, "--train-file", train, "--validation-file", data, *PAIR_COLUMNS,
                  "--batch-size", 8, "--max-length", 64, "--epochs", 4, "--warmup-epochs", 1, "--reg-lr", 1.0, "--bins", 4,
                  "--layers", "1,2", "--match-samples", 8, "--protect-second-text", "--output", out])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "tokprune.json").read_text())
    assert config["protect"] == "second_text" and config["rule"] == "rank_bins"
    assert run(["export", "--model", out, "--output", artifact]).exit_code == 0
    session = open_artifact(artifact, threads=1)
    examples = [TextExample(a, b) for a, b in PAIRS]
    positions = original_positions(session.run(session.text_encoder(examples)))
    masks = {rule["layer"]: rule["bin_mask"] for rule in config["layers"]}
    # ranked first: where the open bins are the top ones, an unprotected token survives a layer only if
    # every second-text token did (other bin masks may close the bins the second text ranks into)
    top_first = [layer for layer, mask in masks.items() if mask == sorted(mask, reverse=True)]
    assert top_first, masks
    checked = 0
    for row, example in enumerate(examples):
        entering = set(range(len(session.text_encoder.token_ids([example])[0][0])))
        for layer in sorted(masks):
            kept = {int(p) for p in positions[f"kept_index_{layer}"][row] if p >= 0}
            second = second_positions(session.text_encoder, example) & entering
            if layer in top_first and kept - second - {0} and kept != entering:
                assert second <= kept, (layer, sorted(kept), sorted(second))
                checked += 1
            entering = kept
    assert checked, "no layer both removed tokens and kept unprotected ones: the test shows nothing"
    report = tmp_path / "parity.json"
    result = run(["parity", "--model", out, "--artifact", artifact, "--data", data, *PAIR_COLUMNS, "--batch-sizes", "1,3", "--report", report])
    assert result.exit_code == 0, result.output
    for c in json.loads(report.read_text())["comparisons"]:
        if c["name"] == "pytorch-drop vs onnxruntime":
            assert c["max_abs_logit_diff"] <= 1e-4 and all(v == 1.0 for v in c["kept_agreement"].values())
