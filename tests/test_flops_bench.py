"""FLOPs formula, removal-efficiency oracle length, and the latency bench on a tiny artifact."""

from __future__ import annotations

import pytest

from onnx_tokprune.flops import EncoderShape, relative_flops


def test_layer_flops_by_hand():
    shape = EncoderShape(hidden=4, intermediate=8, layers=1, labels=2, heads=1)
    assert shape.layer_flops(3, 3) == 6 * 3 * 16 + 4 * 9 * 4 + 2 * 3 * 16 + 4 * 3 * 4 * 8
    assert shape.flops(3) == shape.layer_flops(3, 3) + 2 * 16 + 2 * 4 * 2


def test_pruning_lowers_flops_and_equivalent_length_inverts():
    shape = EncoderShape(384, 1536, 6, labels=2, heads=12)
    pruned = shape.flops(64, {1: 40, 3: 20})
    assert pruned < shape.flops(64)
    length = shape.equivalent_length(pruned)
    assert 20 < length < 64 and shape.flops(length) == pytest.approx(pruned, rel=1e-9)
    assert relative_flops(shape, [64, 64], [{}, {}]) == 1.0
    assert relative_flops(shape, [64], [{1: 40, 3: 20}]) == pytest.approx(pruned / shape.flops(64))


def test_bench_on_tiny_artifacts(tiny_checkpoint, tmp_path):
    from onnx_tokprune.config import LayerRule, PruneConfig
    from onnx_tokprune.data.text import TextExample
    from onnx_tokprune.export.exporter import export_artifact
    from onnx_tokprune.modeling import load_pruned, wrap
    from onnx_tokprune.bench.latency import latency_table, measure_latency

    base = load_pruned(tiny_checkpoint, require_config=False)
    pruned = wrap(base.model, PruneConfig(rule="top_k", layers=(LayerRule(1, keep_ratio=0.5),)))
    export_artifact(pruned, tiny_checkpoint, tmp_path / "p")
    export_artifact(base, tiny_checkpoint, tmp_path / "u")
    examples = [TextExample("a gorgeous , witty , seductive movie that keeps going and going ."), TextExample("short .")]
    result = measure_latency(tmp_path / "p", tmp_path / "u", examples, "tiny", threads=1, repeats=2, progress=False)
    assert result.examples == 2 and result.threads == 1
    assert result.flops_reduction > 1.0
    assert result.pruned_median_ms > 0 and result.oracle_median_ms > 0 and result.removal_efficiency > 0
    table = latency_table([result])
    assert "| tiny | 2 |" in table and "1 intra-op threads" in table
