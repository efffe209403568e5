"""to_onnx / export_artifact on a tiny random BERT: the graph runs in plain onnxruntime and equals drop mode."""

from __future__ import annotations


import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import RAGGED_LENGTHS, prune_configs, ragged_batch
from onnx_tokprune.config import LayerRule, PruneConfig
from onnx_tokprune.artifact import MANIFEST_FILE, MODEL_FILE, kept_output_name, read_manifest
from onnx_tokprune.errors import ExportError
from onnx_tokprune.export.exporter import count_token_prune, export_artifact, to_onnx
from onnx_tokprune.io import OutputExistsError
from onnx_tokprune.modeling import kept_positions, wrap
from onnx_tokprune.artifact import original_positions
from onnx_tokprune.scored_attention import ATTENTION_OP_NAME
from onnx_tokprune.scoring import OP_DOMAIN, OP_NAME

OPSETS = (17, 18)
LENGTHS = RAGGED_LENGTHS
SINGLE_LENGTHS = (9, 40, 1)  # batch 1, longer and shorter than the exporter's example (16)

CONFIGS = prune_configs()
CASES = [(rule, norm, opset) for (rule, norm) in sorted(CONFIGS) for opset in OPSETS]


def make_config(rule: str, normalizer: str) -> PruneConfig:
    return PruneConfig(rule=rule, layers=tuple(CONFIGS[rule, normalizer]), score_normalizer=normalizer)


def plain_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A session with nothing registered: TokenPrune must run as the model's own function."""
    return ort.InferenceSession(model.SerializeToString(), ort.SessionOptions(), providers=["CPUExecutionProvider"])


def feeds(batch):
    return {name: t.numpy() for name, t in zip(("input_ids", "attention_mask", "token_type_ids"), batch)}


def assert_matches_drop_mode(session, encoder, batch, where):
    """Logits within 1e-5; every kept_index_<l> output equals drop mode's exactly.

    The graph's kept_index_<l> is layer l's raw TokenPrune kept_index (positions in the sequence that
    entered layer l: PrunedOutput.kept_index); composed by artifact.original_positions they are the
    original positions of the tokens PrunedOutput.kept marks present.
    """
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, feeds(batch))))
    with torch.no_grad():
        ref = encoder(*batch)
    np.testing.assert_allclose(got["logits"], ref.logits.numpy(), rtol=0, atol=1e-5, err_msg=where)
    assert names == ["logits", *(kept_output_name(layer) for layer in encoder.pruning_layers)]
    assert len(ref.kept) == len(ref.kept_index) == len(encoder.pruning_layers)
    composed = original_positions(got)
    for layer, raw, kept in zip(encoder.pruning_layers, ref.kept_index, ref.kept):
        name = kept_output_name(layer)
        out = got[name]
        assert out.dtype == np.int64
        assert out.shape == tuple(raw.shape), f"{where} layer {layer}"
        assert tuple(kept.shape) == tuple(batch[0].shape), f"{where} layer {layer}: kept is over the input positions"
        np.testing.assert_array_equal(out, raw.numpy(), err_msg=f"{where} layer {layer} (raw)")
        assert [list(row[row >= 0]) for row in composed[name]] == kept_positions(kept), f"{where} layer {layer} (original)"
    return ref


@pytest.fixture(scope="module")
def exported(tiny_bert):
    """(rule, normalizer, opset) -> (drop-mode encoder, ONNX model, plain session), built once each."""
    cache = {}

    def get(rule, normalizer, opset):
        key = (rule, normalizer, opset)
        if key not in cache:
            encoder = wrap(tiny_bert, make_config(rule, normalizer), mode="drop")
            model = to_onnx(encoder, opset)
            cache[key] = (encoder, model, plain_session(model))
        return cache[key]

    return get


@pytest.mark.parametrize("rule, normalizer, opset", CASES, ids=lambda v: str(v))
def test_export_matches_drop_mode(exported, rule, normalizer, opset):
    encoder, model, session = exported(rule, normalizer, opset)
    cfg = encoder.config
    # the checker passes (to_onnx ran it; run it again on what we got)
    onnx.checker.check_model(model, full_check=True)
    assert count_token_prune(model) == len(cfg.layers)
    # each pruning layer: its attention and score in one ScoredAttention node, then TokenPrune
    assert [n.op_type for n in model.graph.node if n.domain == OP_DOMAIN] == [ATTENTION_OP_NAME, OP_NAME] * len(cfg.layers)
    assert [(f.domain, f.name) for f in model.functions] == [(OP_DOMAIN, OP_NAME), (OP_DOMAIN, ATTENTION_OP_NAME)]
    softmaxes = sum(n.op_type == "Softmax" for n in model.graph.node)
    assert softmaxes == encoder.num_layers - len(cfg.layers)  # the layers that do not prune
    assert {o.domain: o.version for o in model.opset_import}[""] == opset

    # a ragged batch of 8
    ref = assert_matches_drop_mode(session, encoder, ragged_batch(LENGTHS, seed=1), f"{rule}/{normalizer}/{opset} batch")
    assert any(int(k.sum()) < sum(LENGTHS) for k in ref.kept), "nothing pruned: a weak test"
    # batch 1 at different lengths
    for n in SINGLE_LENGTHS:
        assert_matches_drop_mode(session, encoder, ragged_batch([n], seed=n), f"{rule}/{normalizer}/{opset} length {n}")


def test_unpruned_export(tiny_bert):
    encoder = wrap(tiny_bert, None)
    model = to_onnx(encoder, 17)
    # the exporter leaves the (shared) model in eval mode: dropout stays off afterwards
    assert not any(m.training for m in encoder.modules())
    assert count_token_prune(model) == 0
    assert not any(n.domain == OP_DOMAIN for n in model.graph.node)
    assert len(model.functions) == 0
    assert [o.name for o in model.graph.output] == ["logits"]
    batch = ragged_batch(LENGTHS, seed=2)
    (logits,) = plain_session(model).run(None, feeds(batch))
    with torch.no_grad():
        hf = tiny_bert(input_ids=batch[0], attention_mask=batch[1], token_type_ids=batch[2]).logits
    np.testing.assert_allclose(logits, hf.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("opset", [16, 19])
def test_unsupported_opset(tiny_bert, opset):
    with pytest.raises(ExportError, match=f"opset {opset}"):
        to_onnx(wrap(tiny_bert, make_config("threshold", "fixed")), opset)


def test_mask_mode_is_not_exported(tiny_bert):
    with pytest.raises(ExportError, match="drop mode"):
        to_onnx(wrap(tiny_bert, make_config("top_k", "fixed"), mode="mask"), 17)


# ------------------------------------------------------------------------------------------ artifact


@pytest.fixture
def checkpoint_dir(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "vocab.txt").write_text("[PAD]\n[CLS]\n")
    (ckpt / "unrelated.bin").write_bytes(b"x")
    return ckpt


def _hidden_entries(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_export_artifact(tiny_bert, tmp_path, checkpoint_dir):
    cfg = make_config("rank_bins", "fixed")
    encoder = wrap(tiny_bert, cfg)
    out_parent = tmp_path / "artifacts"
    output = out_parent / "tiny"
    result = export_artifact(encoder, checkpoint_dir, output, opset=18)
    assert sorted(p.name for p in output.iterdir()) == sorted([MODEL_FILE, "config.json", MANIFEST_FILE, "vocab.txt"])
    assert _hidden_entries(out_parent) == []

    model = onnx.load(str(output / MODEL_FILE))
    assert count_token_prune(model) == 2
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    assert manifest["version"] == 1 and manifest["pruning"]["rule"] == "rank_bins" and manifest["pruning"]["layers"] == cfg.to_json()["layers"]
    # the manifest's pruning section is the pruning config exported, and the typed reader gives it back
    assert PruneConfig.from_json(manifest["pruning"]) == cfg == read_manifest(output).pruning
    assert read_manifest(output).to_json() == manifest == result.to_json()
    export = manifest["export"]
    assert export["architecture"] == "bert" and export["source"] == str(checkpoint_dir)
    assert export["token_prune_nodes"] == count_token_prune(model) == 2
    assert export["opset"] == 18
    assert export["pruning_layers"] == [0, 2]
    assert export["op"] == {"domain": OP_DOMAIN, "name": OP_NAME, "version": 1}
    assert export["outputs"] == ["logits", "kept_index_0", "kept_index_2"]
    assert export["folded_parameters"]["2"]["bin_mask"] == [1, 0, 1, 1, 0]
    hf = json.loads((output / "config.json").read_text())
    assert hf["model_type"] == "bert" and hf["num_hidden_layers"] == 4
    # the saved model runs and equals drop mode
    assert_matches_drop_mode(plain_session(model), encoder, ragged_batch(LENGTHS, seed=3), "artifact")


def test_export_artifact_refuses_existing_then_force(tiny_bert, tmp_path, checkpoint_dir):
    encoder = wrap(tiny_bert, make_config("threshold", "fixed"))
    output = tmp_path / "out"
    output.mkdir()
    (output / "marker.txt").write_text("keep me")
    (output / "model.onnx").write_text("an earlier export")  # --force replaces only what tokprune writes
    # the refusal is io.OutputExistsError (a FileExistsError), not ExportError, since the atomic-output refactor
    with pytest.raises(OutputExistsError, match="--force"):
        export_artifact(encoder, checkpoint_dir, output)
    assert (output / "marker.txt").read_text() == "keep me"
    assert _hidden_entries(tmp_path) == []

    # a failing export with force leaves the old directory and no temp dir behind
    with pytest.raises(ExportError):
        export_artifact(encoder, checkpoint_dir, output, opset=16, force=True)
    assert (output / "marker.txt").is_file()
    assert _hidden_entries(tmp_path) == []

    export_artifact(encoder, checkpoint_dir, output, force=True)
    assert not (output / "marker.txt").exists()
    assert (output / MODEL_FILE).is_file()
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    assert manifest["export"]["token_prune_nodes"] == 3 and manifest["export"]["opset"] == 17
    assert _hidden_entries(tmp_path) == []


def test_export_artifact_unpruned(tiny_bert, tmp_path, checkpoint_dir):
    output = tmp_path / "plain"
    export_artifact(wrap(tiny_bert, None), checkpoint_dir, output)
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    assert manifest["pruning"] is None
    assert manifest["export"]["token_prune_nodes"] == 0 and manifest["export"]["pruning_layers"] == []
    assert count_token_prune(onnx.load(str(output / MODEL_FILE))) == 0
    assert _hidden_entries(tmp_path) == []


def test_top_compatible_bins_export_and_differ_from_exact(tiny_bert):
    """ToP's float32 bin expression (imported checkpoints) runs in the ONNX function too, and is not
    the exact rule: with bins 4, 9, 14, 19 closed, 10 or 20 valid tokens put whole-number ranks there."""
    closed = {4, 9, 14, 19}
    rules = (LayerRule(1, bin_mask=tuple(int(b not in closed) for b in range(25))),)
    compat = PruneConfig(rule="rank_bins", method="top", score_normalizer="length", bin_rounding="top", layers=rules)
    exact = PruneConfig(rule="rank_bins", method="top", score_normalizer="length", layers=rules)
    batch = ragged_batch([11, 6, 21, 3], seed=5)
    encoder = wrap(tiny_bert, compat)
    with torch.no_grad():
        a, b = encoder(*batch), wrap(tiny_bert, exact)(*batch)
    assert not torch.equal(a.kept[0], b.kept[0])
    model = to_onnx(encoder, 17)
    (node,) = [n for n in model.graph.node if n.domain == OP_DOMAIN and n.op_type == OP_NAME]
    assert {attr.name: attr.s for attr in node.attribute} == {"bin_rounding": b"top"}
    assert_matches_drop_mode(plain_session(model), encoder, batch, "top-compatible bins")
