"""The practitioner's baseline (HF export fully fused by onnxruntime) and `tokprune-bench` end to end."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from conftest import assert_one_line_error

SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but boilerplate clichés from start to finish , and the script assumes that not only would subtlety be lost on the target audience , but that it 's also too stupid to realize that they 've already seen this exact same movie a hundred times",
    "short .",
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales .",
    "it 's slow -- very , very slow .",
    "a sometimes tedious film .",
    "or doing last year 's taxes with your ex-wife .",
    "you do n't have to know about music to appreciate the film 's easygoing blend of comedy and romance .",
]


def _logits(session, feeds):
    names = [i.name for i in session.get_inputs()]
    return session.run(["logits"], {k: v for k, v in feeds.items() if k in names})[0]


@pytest.mark.parametrize("int8", [False, True])
def test_baseline_is_fully_fused_and_matches_pytorch(tiny_checkpoint, int8):
    from transformers import AutoModelForSequenceClassification

    from onnx_tokprune.architectures import spec_for
    from onnx_tokprune.export.baseline import export_unpruned_optimized, quantize_unpruned_optimized
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    hf = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint).eval()
    model, (report, embed) = export_unpruned_optimized(hf)
    want = {"EmbedLayerNormalization": 1, "Attention": 4, "SkipLayerNormalization": 8, "BiasGelu": 4}
    assert embed.counts == {} and embed.refused == ()
    assert report.counts == spec_for(hf.config).expected_fusions(hf.config) == want
    if int8:
        model, counts = quantize_unpruned_optimized(model)
        assert counts["quantized_attention"] == 4 and counts["quantized_matmuls"] >= 8
        assert not [n for n in model.graph.node if n.op_type == "Attention"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    encoder = TextEncoder.from_dir(tiny_checkpoint)
    for batch in (SENTENCES[:1], SENTENCES[2:3], SENTENCES[:5], SENTENCES):
        from onnx_tokprune.data.text import TextExample

        feeds = encoder([TextExample(s) for s in batch])
        with torch.no_grad():
            want = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        got = _logits(session, feeds)
        atol = 0.15 if int8 else 1e-4
        assert np.abs(got - want).max() < atol, (len(batch), np.abs(got - want).max())


@pytest.fixture(scope="module")
def pruned_artifact(tiny_checkpoint, tmp_path_factory):
    from onnx_tokprune.config import LayerRule, PruneConfig
    from onnx_tokprune.export.exporter import export_artifact
    from onnx_tokprune.modeling import load_pruned, wrap

    out = tmp_path_factory.mktemp("bench") / "pruned-onnx"
    base = load_pruned(tiny_checkpoint, require_config=False)
    pruned = wrap(base.model, PruneConfig(rule="top_k", layers=(LayerRule(1, keep_ratio=0.5), LayerRule(2, keep_ratio=0.5))))
    export_artifact(pruned, tiny_checkpoint, out)
    return out


def test_bench_writes_table_json_png(pruned_artifact, tmp_path):
    from onnx_tokprune.cli import bench_command
    from onnx_tokprune.bench.suite import VARIANTS

    data = tmp_path / "sentences.txt"
    data.write_text("\n".join(SENTENCES) + "\n")
    out = tmp_path / "bench"
    args = ["--artifact", str(pruned_artifact), "--data", str(data), "--threads", "1", "--repeats", "1", "--batch-size", "4", "--output", str(out)]
    result = CliRunner().invoke(bench_command, args)
    assert result.exit_code == 0, result.output
    assert "threads" in result.output and "ISA" in result.output
    report = json.loads((out / "bench.json").read_text())
    (data_result,) = report["results"]
    assert data_result["sentences"] == len(SENTENCES)
    rows = {v["variant"]: v for v in data_result["variants"]}
    assert tuple(rows) == VARIANTS
    assert rows["unpruned fp32"]["speedup"] == 1.0 and rows["unpruned fp32"]["flops_reduction"] == 1.0
    assert rows["pytorch eager"]["flops_reduction"] == 1.0 and rows["pytorch eager"]["removal_efficiency"] is None
    for name in ("pruned fp32", "pruned int8"):
        # two layers keeping half of the non-CLS tokens each: about 2x fewer FLOPs on these sentences
        assert 1.4 < rows[name]["flops_reduction"] < 3.0
        assert rows[name]["removal_efficiency"] > 0 and rows[name]["oracle_median_ms"] > 0
    for row in rows.values():
        assert 0 < row["batch1_median_ms"] <= row["batch1_p90_ms"] and row["batch8_per_s"] > 0 and row["fixed_cost_ms"] > 0
    curve = data_result["curve"]["unpruned fp32"]
    assert [round(x, 1) for x, _ in curve][-1] == 1.0 and curve[0][0] < 0.3
    table = (out / "bench.md").read_text()
    assert table.count("| sentences") == 0 and table.count("| pruned int8 |") == 1 and "speedup ÷ FLOPs reduction" in table and "8-token ms" in table
    assert f"`tokprune-bench --artifact {pruned_artifact} --data {data} --samples=200 --threads=1" in table
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = CliRunner().invoke(bench_command, args)
    assert_one_line_error(again, "already exists", "--force")


def test_bench_refuses_unpruned_and_int8_artifacts(tiny_checkpoint, pruned_artifact, tmp_path):
    from onnx_tokprune.cli import bench_command
    from onnx_tokprune.export.exporter import export_artifact
    from onnx_tokprune.modeling import load_pruned, wrap

    data = tmp_path / "s.txt"
    data.write_text("short .\n")
    base = load_pruned(tiny_checkpoint, require_config=False)
    export_artifact(wrap(base.model, None), tiny_checkpoint, tmp_path / "u")
    result = CliRunner().invoke(bench_command, ["--artifact", str(tmp_path / "u"), "--data", str(data)])
    assert_one_line_error(result, "does not prune")
    result = CliRunner().invoke(bench_command, ["--artifact", str(tmp_path / "missing"), "--data", str(data)])
    assert_one_line_error(result, "missing not found", "tokprune-export")
    result = CliRunner().invoke(bench_command, ["--artifact", str(pruned_artifact), "--data", str(data), "--model", str(tmp_path / "x"), "--output", str(tmp_path / "b")])
    assert_one_line_error(result, "not found", "--model")


def test_export_unpruned_optimize_is_the_fused_baseline(tiny_checkpoint, tmp_path):
    from onnx_tokprune.cli import export_command
    from onnx_tokprune.runtime.session import open_artifact

    runner = CliRunner()
    for flags, name in ((["--optimize"], "fp32"), (["--optimize", "--int8"], "int8")):
        out = tmp_path / name
        result = runner.invoke(export_command, ["--model", str(tiny_checkpoint), "--unpruned", "--output", str(out), *flags])
        assert result.exit_code == 0, result.output
        assert "EmbedLayerNormalization 1, Attention 4" in result.output
        export = json.loads((out / "tokprune_manifest.json").read_text())["export"]
        assert export["passes"][0]["counts"]["Attention"] == 4 and export["token_prune_nodes"] == 0
        assert ("int8" in export) == (name == "int8")
        labels = open_artifact(out, threads=1).classify(SENTENCES[:3])
        assert len(labels) == 3 and all(0 < r["score"] <= 1 for r in labels)


def _recording_runner(name, log, kept=None):
    from onnx_tokprune.bench.timing import Runner

    def run(feeds):
        log.append((name, int(feeds["input_ids"][0, 0]), feeds["input_ids"].shape))
        out = {"logits": np.zeros((feeds["input_ids"].shape[0], 2), np.float32)}
        if kept is not None:  # keep the first `kept` positions at layer 0
            out["kept_index_0"] = np.tile(np.arange(min(kept, feeds["input_ids"].shape[1])), (feeds["input_ids"].shape[0], 1))
        return out

    return Runner(name, run)


def test_timed_chunks_schedule():
    """16 inputs of one key before the next key; keys take turns chunk by chunk; every job timed once."""
    from onnx_tokprune.bench.timing import CHUNK, timed_chunks

    log = []
    feeds = [{"input_ids": np.full((1, 4), i)} for i in range(40)]
    jobs = {key: [(_recording_runner(key, log), f) for f in feeds] for key in ("a", "b")}
    result = timed_chunks(jobs, repeats=1, desc="", progress=False)
    assert [len(v) for v in result.values()] == [40, 40] and CHUNK == 16
    order = [(name, i) for name, i, _ in log]
    assert order[:16] == [("a", i) for i in range(16)] and order[16:32] == [("b", i) for i in range(16)]
    assert order[64:] == [("a", i) for i in range(32, 40)] + [("b", i) for i in range(32, 40)]


def test_bench_data_runs_pytorch_after_onnxruntime_and_uses_the_oracle_length():
    from onnx_tokprune.flops import EncoderShape
    from onnx_tokprune.bench.suite import bench_data

    log = []
    runners = {
        "unpruned fp32": _recording_runner("unpruned fp32", log),
        "unpruned int8": _recording_runner("unpruned int8", log),
        "pruned fp32": _recording_runner("pruned fp32", log, kept=3),
        "pruned int8": _recording_runner("pruned int8", log, kept=3),
        "pytorch eager": _recording_runner("pytorch eager", log),
    }
    rows = [([i] + [7] * 29, [0] * 30) for i in range(20)]

    def pad(batch):
        return {"input_ids": np.array([r[0] for r in batch]), "token_type_ids": np.array([r[1] for r in batch])}

    shape = EncoderShape(hidden=32, intermediate=64, layers=2, labels=2, heads=4)
    result = bench_data(runners, shape, rows, pad, "fake", repeats=1, batch_size=8, progress=False)
    names = [name for name, _, _ in log]
    first_eager = names.index("pytorch eager")
    assert set(names[first_eager:]) == {"pytorch eager"}  # nothing onnxruntime after PyTorch started
    # the fp32 oracle runs the unpruned fp32 graph on the length whose FLOPs equal the pruned run's
    length = round(shape.equivalent_length(shape.flops(30, {0: 3})))
    assert 3 < length < 30
    assert ("unpruned fp32", 0, (1, length)) in log
    rows_by_name = {v.variant: v for v in result.variants}
    assert rows_by_name["pruned fp32"].flops_reduction == pytest.approx(shape.flops(30) / shape.flops(30, {0: 3}))
    assert rows_by_name["pruned fp32"].removal_efficiency is not None and rows_by_name["pytorch eager"].removal_efficiency is None


def test_describe_pruned_names_every_pass_even_one_that_did_not_fire():
    from onnx_tokprune.artifact import ExportInfo, PassRecord

    export = ExportInfo(
        opset=17, source="ckpt", architecture="bert", pruning_layers=(1, 2), outputs=(), token_prune_nodes=2,
        passes=(PassRecord("ort_transformer_fusions", {"Attention": 2, "BiasGelu": 4}), PassRecord("embed_layer_norm_fusion", {})),
    )
    assert export.describe() == (
        "pruning layers [1, 2]; ort_transformer_fusions: Attention 2, BiasGelu 4; embed_layer_norm_fusion: did not fire"
    )
    plain = ExportInfo(opset=17, source="ckpt", architecture="bert", pruning_layers=(0,), outputs=(), token_prune_nodes=1)
    assert plain.describe() == "pruning layers [0]; no graph passes (export without --optimize)"
