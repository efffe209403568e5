"""Graph passes: the fused-op counts are the contract, and parity holds before and after."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import RAGGED_LENGTHS, TINY_LAYERS, prune_configs, ragged_batch
from onnx_tokprune.config import LayerRule, PruneConfig
from onnx_tokprune.artifact import kept_output_name
from onnx_tokprune.export.exporter import count_token_prune, to_onnx
from onnx_tokprune.export.passes import embed_layer_norm_fusion, optimize_pruned
from onnx_tokprune.modeling import wrap
from onnx_tokprune.scored_attention import ATTENTION_OP_NAME
from onnx_tokprune.scoring import OP_DOMAIN, OP_NAME

CONFIGS = prune_configs()


def _run(model, batch):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = dict(zip(("input_ids", "attention_mask", "token_type_ids"), (t.numpy() for t in batch)))
    return dict(zip(names, session.run(None, feeds)))


@pytest.mark.parametrize("rule, normalizer", [("threshold", "fixed"), ("rank_bins", "length"), ("top_k", "fixed")])
def test_fusions_keep_parity_and_fuse_every_layer_that_does_not_score(tiny_bert, rule, normalizer):
    config = PruneConfig(rule=rule, layers=tuple(CONFIGS[rule, normalizer]), score_normalizer=normalizer)
    encoder = wrap(tiny_bert, config)
    plain = to_onnx(encoder, 17)
    fused, (report, embed) = optimize_pruned(plain, tiny_bert.config, encoder.pruning_layers)
    # the contract: Attention for every layer that does not score, both residual LayerNorms of every
    # layer, every FFN GELU, and the embedding LayerNorm (fused with the embeddings by onnxruntime
    # when layer 0 is plain, else by our rule)
    scoring = {rule.layer for rule in config.layers}
    assert embed.counts == ({"EmbedLayerNormalization": 1} if 0 in scoring else {})
    assert [n.op_type for n in fused.graph.node if "LayerNormalization" in n.op_type and "Skip" not in n.op_type] == ["EmbedLayerNormalization"]
    assert report.counts.get("Attention", 0) == TINY_LAYERS - len(scoring)
    assert report.counts.get("SkipLayerNormalization") == 2 * TINY_LAYERS
    assert report.counts.get("BiasGelu") == TINY_LAYERS
    embed = "LayerNormalization" if 0 in scoring else "EmbedLayerNormalization"
    assert report.counts.get(embed) == 1
    # a scoring layer's attention stays one ScoredAttention node (the score reads its probabilities)
    assert [n.op_type for n in fused.graph.node if n.domain == OP_DOMAIN] == [ATTENTION_OP_NAME, OP_NAME] * len(scoring)
    assert not any(n.op_type == "Softmax" for n in fused.graph.node)
    assert count_token_prune(fused) == count_token_prune(plain) == len(config.layers)
    assert [(f.domain, f.name) for f in fused.functions] == [(f.domain, f.name) for f in plain.functions]
    for lengths, seed in ((RAGGED_LENGTHS, 1), ([9], 2), ([40], 3)):
        batch = ragged_batch(lengths, seed=seed)
        before, after = _run(plain, batch), _run(fused, batch)
        with torch.no_grad():
            ref = encoder(*batch)
        np.testing.assert_allclose(after["logits"], before["logits"], atol=1e-4)
        np.testing.assert_allclose(after["logits"], ref.logits.numpy(), atol=1e-4)
        for layer, raw in zip(encoder.pruning_layers, ref.kept_index):
            np.testing.assert_array_equal(after[kept_output_name(layer)], raw.numpy())


def test_export_optimize_records_the_pass_and_keeps_parity(tiny_checkpoint, tmp_path):
    import json

    from click.testing import CliRunner

    from onnx_tokprune.cli import calibrate_command, export_command, parity_command

    sentences = tmp_path / "s.txt"
    sentences.write_text("a gorgeous , witty , seductive movie .\nit 's slow -- very , very slow .\n"
                         "the acting , costumes , music , cinematography and sound are all astounding .\n")
    ckpt, artifact = tmp_path / "ckpt", tmp_path / "art"
    runner = CliRunner()
    assert runner.invoke(calibrate_command, ["--model", str(tiny_checkpoint), "--data", str(sentences), "--keep", "0.5", "--output", str(ckpt)]).exit_code == 0
    both = runner.invoke(export_command, ["--model", str(ckpt), "--output", str(tmp_path / "int8"), "--optimize", "--int8"])
    assert both.exit_code == 0, both.output
    export = json.loads((tmp_path / "int8" / "tokprune_manifest.json").read_text())["export"]
    assert export["int8"]["quantized_attention"] == export["passes"][0]["counts"]["Attention"] == 4 - len(export["pruning_layers"])
    result = runner.invoke(export_command, ["--model", str(ckpt), "--output", str(artifact), "--optimize"])
    assert result.exit_code == 0, result.output
    assert "pass ort_transformer_fusions: " in result.output
    done, embed = json.loads((artifact / "tokprune_manifest.json").read_text())["export"]["passes"]
    assert done["counts"]["SkipLayerNormalization"] == 2 * 4 and done["counts"]["BiasGelu"] == 4
    assert embed["name"] == "embed_layer_norm_fusion" and "pass embed_layer_norm_fusion: " in result.output
    parity = runner.invoke(parity_command, ["--model", str(ckpt), "--artifact", str(artifact), "--data", str(sentences), "--batch-sizes", "1,3"])
    assert parity.exit_code == 0, parity.output


def test_roberta_optimize_fuses_plain_layers_and_leaves_its_positions_alone():
    """RoBERTa through `--optimize`'s passes: Attention on the layers that do not score, parity with
    PyTorch; its position ids count from the padding index, not 0..S-1, so the embedding rule must
    not fire (the embeddings stay unfused when layer 0 scores)."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=80, num_labels=2)
    model = RobertaForSequenceClassification(config).eval()
    prune = PruneConfig(rule="top_k", layers=(LayerRule(0, keep_ratio=0.7), LayerRule(2, keep_ratio=0.5)), score_normalizer="fixed")
    encoder = wrap(model, prune)
    plain = to_onnx(encoder, 17)
    fused, (fusions, embed) = optimize_pruned(plain, model.config, encoder.pruning_layers)
    assert fusions.counts == {"Attention": 2, "BiasGelu": 4, "LayerNormalization": 1, "SkipLayerNormalization": 8}
    assert embed.counts == {}
    same, report = embed_layer_norm_fusion(plain)
    assert report.counts == {} and [n.op_type for n in same.graph.node] == [n.op_type for n in plain.graph.node]
    for lengths, seed in (([7, 12, 3], 4), ([20], 5)):
        batch = ragged_batch(lengths, seed=seed, vocab_size=120)
        with torch.no_grad():
            ref = encoder(*batch)
        got = _run(fused, batch)
        np.testing.assert_allclose(got["logits"], ref.logits.numpy(), atol=1e-5)
        for layer, raw in zip(encoder.pruning_layers, ref.kept_index):
            np.testing.assert_array_equal(got[kept_output_name(layer)], raw.numpy())
