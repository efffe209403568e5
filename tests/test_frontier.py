"""The frontier command on tiny models: points per method and precision, the files, the axes, reuse,
and the refusals; the truncation and fewer-layers options it builds on."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import assert_one_line_error, make_small_glue
from onnx_tokprune.cli import main

DATA = ["--task", "sst2"]


def invoke(args, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def models(tiny_checkpoint, tmp_path_factory):
    """The tiny 4-layer classifier as the fine-tuned baseline, two calibrated targets and a 2-layer model."""
    root = tmp_path_factory.mktemp("frontier_models")
    glue = make_small_glue(root / "glue")
    data = [*DATA, "--data-dir", glue]
    for flops in ("0.6", "0.8"):
        invoke(["calibrate", "--model", tiny_checkpoint, *data, "--samples", 16, "--flops", flops, "--output", root / f"cal{flops[2:]}"])
    invoke(["train", "finetune", "--model", tiny_checkpoint, *data, "--num-layers", 2, "--epochs", 1, "--max-train-samples", 16,
            "--batch-size", 8, "--max-length", 64, "--output", root / "layers2"])
    invoke(["train", "finetune", "--model", tiny_checkpoint, *data, "--epochs", 1, "--max-train-samples", 16,
            "--batch-size", 8, "--max-length", 10, "--output", root / "cut10"])
    invoke(["calibrate", "--model", root / "layers2", *data, "--samples", 16, "--flops", "0.8", "--layers", "1", "--output", root / "cal8_on2"])
    return root, glue


def test_finetune_keeps_the_first_layers(models):
    root, _ = models
    assert json.loads((root / "layers2" / "config.json").read_text())["num_hidden_layers"] == 2


def test_finetune_refuses_more_layers_than_the_checkpoint_has(tiny_checkpoint, tmp_path):
    glue = make_small_glue(tmp_path / "glue")
    result = invoke(["train", "finetune", "--model", tiny_checkpoint, *DATA, "--data-dir", glue, "--num-layers", 9,
                     "--output", tmp_path / "out"], ok=False)
    assert_one_line_error(result, "has 4 layers", "1 to 4, got 9")
    assert not (tmp_path / "out").exists()


def test_eval_max_tokens_cuts_inputs_and_counts_flops_against_whole_inputs(tiny_checkpoint, tmp_path):
    glue = make_small_glue(tmp_path / "glue")
    whole, cut = tmp_path / "whole.json", tmp_path / "cut.json"
    invoke(["eval", "--model", tiny_checkpoint, *DATA, "--data-dir", glue, "--json", whole])
    invoke(["eval", "--model", tiny_checkpoint, *DATA, "--data-dir", glue, "--max-tokens", 8, "--json", cut])
    full, short = json.loads(whole.read_text())[0], json.loads(cut.read_text())[0]
    assert full["relative_flops"] == 1.0 and full["max_tokens"] is None
    assert short["max_tokens"] == 8 and short["mean_tokens"] <= 8 < full["mean_tokens"]
    assert short["relative_flops"] == pytest.approx(short["analytic_gflops"] / full["analytic_gflops"], rel=1e-9)
    assert short["relative_flops"] < 0.5


def test_eval_max_tokens_too_small_is_one_line(tiny_checkpoint, tmp_path):
    glue = make_small_glue(tmp_path / "glue")
    result = invoke(["eval", "--model", tiny_checkpoint, *DATA, "--data-dir", glue, "--max-tokens", 2], ok=False)
    assert_one_line_error(result, "--max-tokens", "at least 4")


def frontier_args(root, glue, out, *extra):
    return ["frontier", "--baseline", root.parent / "baseline", "--model", root / "cal6", "--model", root / "cal8",
            "--model", root / "layers2", "--model", root / "cal8_on2", *DATA, "--data-dir", glue, "--samples", 6, "--repeats", 1, "--threads", 1,
            "--output", out, *extra]


@pytest.fixture(scope="module")
def frontier(models, tiny_checkpoint):
    root, glue = models
    shutil.copytree(tiny_checkpoint, root.parent / "baseline", dirs_exist_ok=True)
    out = root / "frontier"
    result = invoke(frontier_args(root, glue, out, "--truncate", "auto", "--truncate", 12, "--truncated", f"{root / 'cut10'}:10"))
    return out, result.output


def test_frontier_writes_every_method_at_both_precisions(frontier):
    out, output = frontier
    data = json.loads((out / "frontier.json").read_text())
    points = data["points"]
    methods = {(p["method"], p["precision"]) for p in points}
    expected = {"fine-tuned", "calibrated", "fewer layers", "truncation", "truncation (fine-tuned)"}
    assert methods == {(m, precision) for m in expected for precision in ("fp32", "int8")}
    by_name = {(p["name"], p["precision"]): p for p in points}
    reference = by_name["fine-tuned", "fp32"]
    assert reference["relative_flops"] == pytest.approx(1.0) and reference["latency_ratio"] == 1.0
    assert by_name["cal6", "fp32"]["relative_flops"] < by_name["cal8", "fp32"]["relative_flops"] < 1
    assert by_name["cal6", "fp32"]["kept_tokens"]
    assert 0.3 < by_name["layers2", "fp32"]["relative_flops"] < 0.6 and by_name["layers2", "fp32"]["layers"] == 2
    # pruned from the 2-layer model: on the calibrated curve, FLOPs against the 4-layer baseline, its depth kept
    on2 = by_name["cal8_on2", "fp32"]
    assert on2["method"] == "calibrated" and on2["layers"] == 2 and by_name["cal6", "fp32"]["layers"] is None
    assert on2["relative_flops"] < by_name["layers2", "fp32"]["relative_flops"]
    truncated = [p for p in points if p["method"] == "truncation" and p["precision"] == "fp32"]
    assert 12 in {p["max_tokens"] for p in truncated} and len(truncated) >= 2
    for p in truncated:  # 'auto' picks lengths whose FLOPs are those of the calibrated points
        assert p["relative_flops"] < 1
    auto = sorted(p["relative_flops"] for p in truncated if p["max_tokens"] != 12)
    assert auto and min(abs(a - by_name["cal6", "fp32"]["relative_flops"]) for a in auto) < 0.1
    cut = by_name["cut10", "fp32"]
    assert cut["max_tokens"] == 10 and cut["relative_flops"] < by_name["truncate-12", "fp32"]["relative_flops"]
    for p in points:
        assert p["latency_ratio"] > 0 and p["median_ms"] > 0 and 0 <= p["metric"] <= 100 and p["metric_name"] == "accuracy"
    assert data["axes"] == [{"x": "batch-1 latency relative to the fused unpruned fp32 model"}, {"x": "relative FLOPs (1 = unpruned)"}]
    assert data["environment"]["threads"] == 1 and "tokprune frontier --baseline" in data["command"]
    floors = data["floors"]  # the tiny model has 4 layers: pruning from layers 0, 1, 2
    assert list(floors) == ["0", "1", "2"] and 0 < floors["0"] < floors["1"] < floors["2"] < 1
    md = (out / "frontier.md").read_text()
    assert "| method | point | precision | accuracy |" in md and "Fastest point per method within 1 point" in md
    assert "first 12 tokens" in md and "2 layers (layers2)" in md and "cal8_on2 (on 2 layers)" in md and "first 10 tokens (cut10)" in md
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in output and str(out / "frontier.png") in output


def test_frontier_reuses_measured_points(frontier, models):
    out, _ = frontier
    root, glue = models
    before = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    invoke(frontier_args(root, glue, out, "--truncate", 12, "--truncate", 20, "--no-int8"))
    after = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert set(after) - set(before) == {"truncate-20.json"}
    assert all(after[name] == stamp for name, stamp in before.items())
    data = json.loads((out / "frontier.json").read_text())
    assert {p["precision"] for p in data["points"]} == {"fp32"}


def test_frontier_refuses_a_pruned_baseline_and_an_unclassifiable_model(models, tiny_checkpoint, tmp_path):
    root, glue = models
    result = invoke(["frontier", "--baseline", root / "cal6", *DATA, "--data-dir", glue, "--output", tmp_path / "f"], ok=False)
    assert_one_line_error(result, "--baseline is the fine-tuned, unpruned checkpoint")
    result = invoke(["frontier", "--baseline", tiny_checkpoint, "--model", tiny_checkpoint, *DATA, "--data-dir", glue,
                     "--output", tmp_path / "f"], ok=False)
    assert_one_line_error(result, "neither prunes", "--num-layers")
    result = invoke(["frontier", "--baseline", tiny_checkpoint, "--truncate", "many", *DATA, "--data-dir", glue,
                     "--output", tmp_path / "f"], ok=False)
    assert_one_line_error(result, "--truncate", "'auto'")
    result = invoke(["frontier", "--baseline", tiny_checkpoint, "--truncated", root / "cal6", *DATA, "--data-dir", glue,
                     "--output", tmp_path / "f"], ok=False)
    assert_one_line_error(result, "--truncated", "CHECKPOINT:N")
    result = invoke(["frontier", "--baseline", tiny_checkpoint, "--truncated", f"{root / 'cal6'}:10", *DATA, "--data-dir", glue,
                     "--output", tmp_path / "f"], ok=False)
    assert_one_line_error(result, "--truncated", "unpruned checkpoint")
    assert not (tmp_path / "f").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = invoke(["frontier", "--baseline", tiny_checkpoint, *DATA, "--data-dir", glue, "--output", other, "--force"], ok=False)
    assert_one_line_error(result, str(other))
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_read_gives_back_the_written_frontier(frontier, tmp_path):
    from onnx_tokprune.errors import CheckpointError
    from onnx_tokprune.frontier import read

    out, _ = frontier
    again = read(out)
    data = json.loads((out / "frontier.json").read_text())
    assert again.to_json() == data and again.reference().latency_ratio == 1.0
    with pytest.raises(CheckpointError, match="run tokprune frontier"):
        read(tmp_path)
    (tmp_path / "frontier.json").write_text('{"task": "x"}')
    with pytest.raises(CheckpointError, match="not a frontier.json written by tokprune frontier"):
        read(tmp_path)


def _point(name, method, precision, metric, flops, ratio, **extra):
    from onnx_tokprune.frontier import Point

    return Point(name=name, method=method, precision=precision, metric_name="f1", metric=metric, relative_flops=flops,
                 latency_ratio=ratio, median_ms=ratio, baseline_median_ms=1.0, checkpoint=f"out/{name}", **extra)


def test_results_table_keeps_the_fastest_point_within_one_point_per_method_and_precision():
    from onnx_tokprune.frontier import Frontier, results_markdown

    points = [
        _point("finetuned", "fine-tuned", "fp32", 86.0, 1.0, 1.0),
        _point("ltp_06", "LTP", "fp32", 85.5, 0.62, 0.7),
        _point("ltp_045", "LTP", "fp32", 85.1, 0.47, 0.55),  # within 1 and faster: the LTP row
        _point("ltp_03", "LTP", "fp32", 80.0, 0.31, 0.4),  # fastest but 6 points down
        _point("ltp_06", "LTP", "int8", 85.2, 0.62, 0.3),
        _point("top_03", "ToP", "fp32", 84.0, 0.3, 0.45),
        _point("finetuned", "fewer layers", "fp32", 70.0, 0.5, 0.5, layers=3),
        _point("finetuned", "fine-tuned", "int8", 85.7, 1.0, 0.6),
    ]
    table = results_markdown([Frontier("mrpc", "f1", "out/finetuned", points, {})]).splitlines()
    assert table[0].startswith("| task | method | fp32: point | Δ | rel. FLOPs | speedup | INT8: point")
    rows = {line.split(" | ")[1]: line for line in table[2:]}
    assert list(rows) == ["LTP", "ToP", "fine-tuned", "fewer layers"]
    assert rows["fine-tuned"] == ("| mrpc (f1 86.00) | fine-tuned | unpruned (finetuned) | +0.00 | 1.000 | 1.00× "
                                  "| unpruned (finetuned) | -0.30 | 1.000 | 1.67× |")
    assert rows["LTP"] == "| mrpc (f1 86.00) | LTP | ltp_045 | -0.90 | 0.470 | 1.82× | ltp_06 | -0.80 | 0.620 | 3.33× |"
    assert rows["ToP"] == "| mrpc (f1 86.00) | ToP | none | | | | none | | | |"
    assert "none" in rows["fewer layers"]


def test_evaluation_noise_says_when_one_point_is_within_the_sets_noise():
    from onnx_tokprune.frontier import Frontier, evaluation_noise, markdown

    def frontier(metric_name, metric, examples):
        ref = _point("finetuned", "fine-tuned", "fp32", metric, 1.0, 1.0, produced_by={"examples": examples})
        ref.metric_name = metric_name
        return Frontier("t", metric_name, "out/finetuned", [ref], {"cpu": "x", "machine": "x86_64", "isa": [], "threads": 1,
                                                                    "onnxruntime": "1", "token_prune": "kernel"})

    small = evaluation_noise(frontier("accuracy", 55.6, 277))
    assert small.startswith("Evaluation set: 277 examples (1 point ≈ 2.8 examples)")
    assert "standard error of ±3.0 points: differences within 1 point are within this set's noise" in small
    assert small in markdown(frontier("accuracy", 55.6, 277))
    large = evaluation_noise(frontier("accuracy", 90.0, 10000))
    assert "±0.3 points" in large and "noise" not in large
    assert evaluation_noise(frontier("f1", 86.6, 408)) == "Evaluation set: 408 examples (1 point ≈ 4.1 examples)."
    assert evaluation_noise(frontier("f1", 86.6, 0)) == ""


def _fit_frontier(points, floors=None):
    from onnx_tokprune.frontier import Frontier

    ref = _point("finetuned", "fine-tuned", "fp32", 86.0, 1.0, 1.0)
    return Frontier("mrpc", "f1", "out/finetuned", [ref, *points], {}, floors=floors or {})


def test_latency_fit_is_over_the_pruned_points_of_one_precision_on_the_baselines_depth():
    from onnx_tokprune.frontier import latency_fit

    pruned = [_point(f"p{f}", m, "fp32", 85.0, f, 0.2 + 0.8 * f) for f, m in ((0.3, "LTP"), (0.45, "ToP"), (0.6, "calibrated"))]
    others = [  # none of these may move the fit: not pruned, another precision, or pruned from a shallower model
        _point("t16", "truncation", "fp32", 70.0, 0.3, 0.1, max_tokens=16),
        _point("l2", "fewer layers", "fp32", 75.0, 0.33, 0.9, layers=2),
        _point("on5", "LTP", "fp32", 84.0, 0.4, 0.1, layers=5),
        _point("p3i", "LTP", "int8", 84.0, 0.3, 0.9),
    ]
    fit = latency_fit(_fit_frontier(pruned + others))
    assert fit.points == 3 and fit.intercept == pytest.approx(0.2) and fit.slope == pytest.approx(0.8) and fit.r2 == pytest.approx(1.0)
    assert fit.ceiling == pytest.approx(5.0) and fit.flops_for(2.0) == pytest.approx(0.375) and fit.flops_for(5.0) == pytest.approx(0.0, abs=1e-12)
    assert fit.flops_range == (0.3, 0.6)
    assert latency_fit(_fit_frontier(pruned + others), "int8") is None  # one INT8 point
    assert latency_fit(_fit_frontier(pruned[:2])) is None  # two points
    close = [_point(f"p{f}", "LTP", "fp32", 85.0, f, 0.2 + 0.8 * f) for f in (0.40, 0.42, 0.45)]
    assert latency_fit(_fit_frontier(close)) is None  # FLOPs spanning less than 0.1
    flat = [_point(f"p{f}", "LTP", "fp32", 85.0, f, 0.7 - 0.1 * f) for f in (0.3, 0.45, 0.6)]
    assert latency_fit(_fit_frontier(flat)) is None  # latency not rising with FLOPs


def test_latency_fit_lines_name_the_ceiling_the_flops_each_speedup_needs_and_the_floors():
    from onnx_tokprune.frontier import latency_fit_lines, markdown

    pruned = [_point(f"p{f}", "LTP", "fp32", 85.0, f, 0.2 + 0.8 * f) for f in (0.3, 0.45, 0.6)]
    frontier = _fit_frontier(pruned, floors={"1": 0.25})
    frontier.environment = {"cpu": "x", "machine": "x86_64", "isa": [], "threads": 1, "onnxruntime": "1", "token_prune": "kernel"}
    (line,) = latency_fit_lines(frontier)
    assert line.startswith("Pruned points' latency (fp32, 3 points at 0.30–0.60 relative FLOPs) ≈ 0.200 + 0.800 × relative FLOPs (r² 1.00)")
    assert "pruning alone cannot pass 5.0×" in line
    assert "relative FLOPs needed for 1.5× ≈ 0.58, 2× ≈ 0.38, 2.5× ≈ 0.25, 3× ≈ 0.17, 4× ≈ 0.06" in line
    assert "pruning from layer 1 cannot go below 0.250 (only [CLS] after its attention): 2.50× at most." in line
    assert line in markdown(frontier)


def test_pruning_floor_keeps_only_cls_after_the_first_pruning_layers_attention():
    from onnx_tokprune.flops import EncoderShape, pruning_floor

    shape = EncoderShape(hidden=8, intermediate=32, layers=3, labels=2, heads=2)
    d, i, h, n = 8, 32, 2, 10
    whole = 3 * (6 * n * d * d + 4 * n * n * d + 2 * n * d * d + 4 * n * d * i)
    cls_layer = 6 * d * d + 4 * d + 2 * d * d + 4 * d * i + 2 * h  # one token in, one out, scored
    first = 6 * n * d * d + 4 * n * n * d + 2 * d * d + 4 * d * i + 2 * h * n * n  # all tokens in, [CLS] out, scored
    head = 2 * d * d + 2 * d * 2
    assert pruning_floor(shape, [n], 1) == pytest.approx((whole / 3 + first + cls_layer + head) / (whole + head))
    assert pruning_floor(shape, [n], 0) == pytest.approx((first + 2 * cls_layer + head) / (whole + head))
    assert pruning_floor(shape, [n, 2 * n], 1) > pruning_floor(shape, [n], 1)  # longer inputs: the quadratic part of layer 1 weighs more
