"""The CLS-only last layer: exact logits, its FLOPs (analytic = counted), the export pass with its count
(or the reason it refused), the fusion contract with it, parity and eval through the commands."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import RAGGED_LENGTHS, SST2_SENTENCES, prune_configs, ragged_batch
from onnx_tokprune.architectures import spec_for
from onnx_tokprune.config import LayerRule, PruneConfig
from onnx_tokprune.flops import EncoderShape
from onnx_tokprune.modeling import wrap
from onnx_tokprune.modeling.encoder import PrunedEncoder


def cls_only(model, config, mode="drop"):
    return PrunedEncoder(spec_for(model.config).adapter(model), config, mode, cls_only=True).eval()


@pytest.mark.parametrize("key", [k for k, layers in sorted(prune_configs().items()) if layers[-1].layer != 3])
@pytest.mark.parametrize("mode", ["drop", "mask"])
def test_cls_only_last_layer_gives_the_full_layer_logits(tiny_bert, key, mode):
    config = PruneConfig(rule=key[0], score_normalizer=key[1], layers=tuple(prune_configs()[key]), method="static")
    batch = ragged_batch(RAGGED_LENGTHS)
    with torch.no_grad():
        full, short = wrap(tiny_bert, config, mode)(*batch), cls_only(tiny_bert, config, mode)(*batch)
    torch.testing.assert_close(short.logits, full.logits, atol=1e-5, rtol=0)
    assert [torch.equal(a, b) for a, b in zip(short.kept, full.kept)] == [True] * len(config.layers)


def test_cls_only_refuses_a_pruning_last_layer_and_a_span_head(tiny_bert):
    from transformers import BertForQuestionAnswering

    last = PruneConfig(rule="top_k", layers=(LayerRule(3, keep_ratio=0.5),), method="static")
    with pytest.raises(ValueError, match=r"the last layer \(3\) prunes"):
        cls_only(tiny_bert, last)
    qa = BertForQuestionAnswering(tiny_bert.config).eval()
    with pytest.raises(ValueError, match="a span head reads every position"):
        PrunedEncoder(spec_for(qa.config).adapter(qa), None, head="span", cls_only=True)


def test_cls_only_flops_analytic_equal_counted(tiny_bert):
    from torch.utils.flop_counter import FlopCounterMode

    config = PruneConfig(rule="top_k", layers=(LayerRule(1, keep_ratio=0.5),), method="static")
    encoder = cls_only(tiny_bert, config)
    shape = EncoderShape.from_hf(tiny_bert.config, cls_only_last=True)
    full = EncoderShape.from_hf(tiny_bert.config)
    for n in (1, 9, 40):
        batch = ragged_batch([n])
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            out = encoder(*batch)
        kept = {1: float(out.kept[0].sum())}
        assert counter.get_total_flops() == pytest.approx(shape.flops(n, kept), rel=1e-9)
        if n > 1:
            assert shape.flops(n, kept) < full.flops(n, kept)


def run(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


def test_export_pass_parity_and_eval_with_cls_only(tiny_checkpoint, tmp_path):
    from onnx_tokprune.artifact import read_manifest
    from onnx_tokprune.cli import calibrate_command, eval_command, export_command, parity_command

    data = tmp_path / "sentences.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(SST2_SENTENCES * 2)))
    ckpt = tmp_path / "cal"
    assert run(calibrate_command, ["--model", tiny_checkpoint, "--data", data, "--keep", "0.5", "--layers", "1,2", "--output", ckpt]).exit_code == 0
    artifact = tmp_path / "art"
    result = run(export_command, ["--model", ckpt, "--output", artifact, "--optimize", "--cls-only"])
    assert result.exit_code == 0, result.output
    assert "pass cls_only_last_layer: cls_only_layers 1" in result.output
    manifest = read_manifest(artifact)
    assert manifest.export.cls_only_last
    fusions = next(p for p in manifest.export.passes if p.name == "ort_transformer_fusions").counts
    assert fusions["Attention"] == 4 - 2 - 1  # two scoring layers and the CLS-only last layer are not Attention nodes
    report = tmp_path / "parity.json"
    result = run(parity_command, ["--model", ckpt, "--artifact", artifact, "--data", data, "--report", report])
    assert result.exit_code == 0, result.output
    comparisons = json.loads(report.read_text())["comparisons"]
    # the artifact against the CLS-only drop mode, and that against the full-layer mask mode
    assert all(c["max_abs_logit_diff"] <= 1e-4 and c["prediction_agreement"] == 1.0 for c in comparisons)
    out = tmp_path / "eval.json"
    result = run(eval_command, ["--model", ckpt, "--artifact", artifact, "--data", data, "--cls-only", "--json", out])
    assert result.exit_code == 0, result.output
    short = json.loads(out.read_text())
    full_out = tmp_path / "eval-full.json"
    assert run(eval_command, ["--model", ckpt, "--data", data, "--json", full_out]).exit_code == 0
    full = json.loads(full_out.read_text())
    assert short[0]["metrics"] == full[0]["metrics"]
    assert short[0]["relative_flops"] < full[0]["relative_flops"]
    assert short[0]["counted_gflops"] == pytest.approx(short[0]["analytic_gflops"], rel=1e-6)
    assert short[2]["relative_flops"] == pytest.approx(short[0]["relative_flops"], rel=1e-6)  # onnxruntime, from the manifest
    refused = tmp_path / "refused"
    last = tmp_path / "last"
    assert run(calibrate_command, ["--model", tiny_checkpoint, "--data", data, "--keep", "0.5", "--layers", "1,3", "--output", last]).exit_code == 0
    result = run(export_command, ["--model", last, "--output", refused, "--cls-only"])
    assert result.exit_code == 0, result.output
    assert "pass cls_only_last_layer: did not fire (the last layer (3) prunes: its scores need every query row)" in result.output
    assert not read_manifest(refused).export.cls_only_last
