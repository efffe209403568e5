"""`tokprune-export --int8`: dynamic INT8 linear layers; TokenPrune and the score MatMuls stay fp32."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import RAGGED_LENGTHS, prune_configs, ragged_batch
from onnx_tokprune.config import PruneConfig
from onnx_tokprune.artifact import MANIFEST_FILE, MODEL_FILE
from onnx_tokprune.export.exporter import count_token_prune, export_artifact, to_onnx
from onnx_tokprune.export.quantize import INT8_SETTINGS, activation_matmuls, to_int8, weight_linear_nodes
from onnx_tokprune.modeling import wrap
from onnx_tokprune.scored_attention import ATTENTION_OP_NAME
from onnx_tokprune.scoring import OP_DOMAIN, OP_NAME

CASES = [("threshold", "fixed"), ("rank_bins", "fixed"), ("top_k", "length")]
SEEDS = range(1, 6)
# Measured on tiny_bert (|logits| up to ~1.5), seeds 1-5, with the portable setting (7-bit weights),
# whose integer products are the same on every x86-64 CPU (tests/test_int8_isa.py: an emulated
# AVX2-only CPU gives these logits bit for bit), so the bounds hold with and without VNNI: unpruned max
# |Δlogit| 0.069; pruned rows whose kept sets all agree with fp32: max |Δlogit| 0.077; kept sets agree
# on 78-82% of rows (a token near a threshold or a rank-bin edge can flip; such rows then differ more).
PORTABLE = INT8_SETTINGS["portable"].to_json()
UNPRUNED_ATOL = 0.15
AGREEING_ROWS_ATOL = 0.2
MIN_ROW_AGREEMENT = 0.7


def plain_session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), ort.SessionOptions(), providers=["CPUExecutionProvider"])


def run(session, batch) -> dict[str, np.ndarray]:
    feeds = {name: t.numpy() for name, t in zip(("input_ids", "attention_mask", "token_type_ids"), batch)}
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def kept_rows(outputs: dict[str, np.ndarray]) -> list[tuple]:
    """Per row, the kept positions of every pruning layer (padding -1 removed)."""
    names = [n for n in outputs if n.startswith("kept_index_")]
    rows = outputs["logits"].shape[0]
    return [tuple(tuple(int(i) for i in outputs[n][r] if i >= 0) for n in names) for r in range(rows)]


@pytest.fixture(scope="module")
def pair(tiny_bert):
    """(rule, normalizer) or None (unpruned) -> (fp32 model, int8 model, counts), built once each."""
    cache = {}

    def get(case):
        if case not in cache:
            cfg = None if case is None else PruneConfig(rule=case[0], layers=tuple(prune_configs()[case]), score_normalizer=case[1])
            fp32 = to_onnx(wrap(tiny_bert, cfg, mode="drop"), 17)
            int8, counts = to_int8(fp32)
            cache[case] = (fp32, int8, counts)
        return cache[case]

    return get


@pytest.mark.parametrize("case", CASES, ids="/".join)
def test_int8_graph_structure(pair, case):
    fp32, int8, counts = pair(case)
    onnx.checker.check_model(int8, full_check=True)
    # TokenPrune: same nodes with the same inputs, its function and opset import still there
    prune = lambda m: [list(n.input) for n in m.graph.node if n.domain == OP_DOMAIN and n.op_type == OP_NAME]
    assert count_token_prune(int8) == count_token_prune(fp32) == len(prune_configs()[case]) > 0
    assert prune(int8) == prune(fp32)
    assert [(f.domain, f.name) for f in int8.functions] == [(OP_DOMAIN, OP_NAME), (OP_DOMAIN, ATTENTION_OP_NAME)]
    assert {o.domain for o in int8.opset_import} >= {"", OP_DOMAIN}
    # every weight MatMul / Gemm is quantized; activation MatMuls (attention of the layers that do not prune) untouched
    ops = [n.op_type for n in int8.graph.node]
    weights = weight_linear_nodes(fp32)
    activations = {n.name: list(n.input) for n in activation_matmuls(fp32)}
    assert weight_linear_nodes(int8) == []
    assert ops.count("MatMulInteger") == len(weights) == counts["quantized_matmuls"] + counts["quantized_gemms"]
    assert ops.count("DynamicQuantizeLinear") > 0
    assert "Gemm" not in ops
    assert {n.name: list(n.input) for n in activation_matmuls(int8)} == activations
    assert counts["fp32_matmuls"] == len(activations) == ops.count("MatMul")
    # 6 weight MatMuls per layer (Q, K, V, output, FFN in/out), a scoring layer packs Q, K, V into one;
    # 2 activation MatMuls (QK^T, PV) per layer that does not prune, a scoring layer's are in ScoredAttention
    scoring = len(prune_configs()[case])
    assert counts == {"quantized_matmuls": 24 - 2 * scoring, "quantized_gemms": 2, "fp32_matmuls": 2 * (4 - scoring), **PORTABLE}
    # TokenPrune's score input comes straight from the fp32 ScoredAttention node of the same layer
    producers = {o: n for n in int8.graph.node for o in n.output}
    attention = [producers[inputs[1]] for inputs in prune(int8)]
    assert [(n.domain, n.op_type) for n in attention] == [(OP_DOMAIN, ATTENTION_OP_NAME)] * scoring
    assert [list(n.input) for n in attention] == [list(producers[i[1]].input) for i in prune(fp32)]
    # the fp32 model given to to_int8 is unchanged
    assert not any(n.op_type == "MatMulInteger" for n in fp32.graph.node)


@pytest.mark.parametrize("case", CASES, ids="/".join)
def test_int8_close_to_fp32(pair, case):
    fp32, int8, _ = pair(case)
    s32, s8 = plain_session(fp32), plain_session(int8)  # nothing registered: TokenPrune runs as its function
    agreeing, deltas, pruned = 0, [], False
    for seed in SEEDS:
        batch = ragged_batch(RAGGED_LENGTHS, seed=seed)
        ref, got = run(s32, batch), run(s8, batch)
        assert list(got) == list(ref)
        assert all(got[n].dtype == np.int64 for n in got if n != "logits")
        pruned |= any(int((ref[n] >= 0).sum()) < sum(RAGGED_LENGTHS) for n in ref if n != "logits")
        for row, (a, b) in enumerate(zip(kept_rows(ref), kept_rows(got))):
            if a == b:
                agreeing += 1
                deltas.append(float(np.abs(ref["logits"][row] - got["logits"][row]).max()))
    rate = agreeing / (len(SEEDS) * len(RAGGED_LENGTHS))
    print(f"{case}: kept sets agree on {100 * rate:.0f}% of rows; max |Δlogit| there {max(deltas):.4f}")
    assert pruned, "nothing pruned: a weak test"
    assert rate >= MIN_ROW_AGREEMENT
    assert max(deltas) < AGREEING_ROWS_ATOL
    assert max(deltas) > 0  # the weights really are quantized


def test_int8_unpruned(pair):
    fp32, int8, counts = pair(None)
    assert count_token_prune(int8) == 0 and len(int8.functions) == 0
    assert {o.domain for o in int8.opset_import} == {""}
    assert counts == {"quantized_matmuls": 24, "quantized_gemms": 2, "fp32_matmuls": 8, **PORTABLE}
    s32, s8 = plain_session(fp32), plain_session(int8)
    worst = max(float(np.abs(run(s32, b)["logits"] - run(s8, b)["logits"]).max()) for b in (ragged_batch(RAGGED_LENGTHS, seed=s) for s in SEEDS))
    print(f"unpruned: max |Δlogit| {worst:.4f}")
    assert 0 < worst < UNPRUNED_ATOL


def test_export_artifact_int8_manifest(tiny_bert, tmp_path):
    cfg = PruneConfig(rule="top_k", layers=tuple(prune_configs()["top_k", "fixed"]), score_normalizer="fixed")
    encoder = wrap(tiny_bert, cfg, mode="drop")
    export_artifact(encoder, tmp_path, tmp_path / "fp32")
    export_artifact(encoder, tmp_path, tmp_path / "int8", int8=True)
    plain = json.loads((tmp_path / "fp32" / MANIFEST_FILE).read_text())["export"]
    export = json.loads((tmp_path / "int8" / MANIFEST_FILE).read_text())["export"]
    assert "int8" not in plain
    # two scoring layers, each with one packed Q/K/V MatMul instead of three and its attention in ScoredAttention
    assert export["int8"] == {"quantized_matmuls": 20, "quantized_gemms": 2, "fp32_matmuls": 4, **PORTABLE}
    assert export["int8"]["setting"] == "portable" and export["int8"]["reduce_range"] is True
    assert export["token_prune_nodes"] == plain["token_prune_nodes"] == 2
    assert {k: v for k, v in export.items() if k != "int8"} == {k: v for k, v in plain.items()}
    session = ort.InferenceSession(str(tmp_path / "int8" / MODEL_FILE), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == plain["outputs"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dir left behind


@pytest.fixture(scope="module")
def calibrated(tiny_checkpoint, tmp_path_factory):
    from click.testing import CliRunner

    from onnx_tokprune.cli import calibrate_command

    data = tmp_path_factory.mktemp("data") / "sentences.txt"
    data.write_text("\n".join(["a gorgeous , witty , seductive movie .", "it 's slow -- very , very slow .", "a sometimes tedious film ."] * 4) + "\n")
    out = tmp_path_factory.mktemp("cal") / "ckpt"
    result = CliRunner().invoke(calibrate_command, ["--model", str(tiny_checkpoint), "--data", str(data), "--keep", "0.5", "--output", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("unpruned", [False, True], ids=["pruned", "unpruned"])
def test_cli_int8(calibrated, tmp_path, unpruned):
    from click.testing import CliRunner

    from onnx_tokprune.cli import export_command
    from onnx_tokprune.runtime import open_artifact

    out = tmp_path / "a"
    args = ["--model", str(calibrated), "--output", str(out), "--int8"] + (["--unpruned"] if unpruned else [])
    result = CliRunner().invoke(export_command, args)
    assert result.exit_code == 0, result.output
    assert "INT8" in result.output
    export = json.loads((out / MANIFEST_FILE).read_text())["export"]
    scoring = len(json.loads((out / MANIFEST_FILE).read_text())["export"]["pruning_layers"])
    assert export["int8"]["weight_type"] == "QInt8" and export["int8"]["quantized_matmuls"] == 24 - 2 * scoring
    model = onnx.load(str(out / MODEL_FILE))
    assert count_token_prune(model) == export["token_prune_nodes"] == (0 if unpruned else len(export["pruning_layers"]))
    assert any(n.op_type == "MatMulInteger" for n in model.graph.node)
    plain = ort.InferenceSession(str(out / MODEL_FILE), providers=["CPUExecutionProvider"])
    assert [o.name for o in plain.get_outputs()] == export["outputs"]
    labels = open_artifact(out).classify(["a gorgeous , witty , seductive movie .", "a sometimes tedious film ."])
    assert len(labels) == 2


def test_cli_int8_default_output_name(calibrated, tmp_path):
    import shutil

    from click.testing import CliRunner

    from onnx_tokprune.cli import export_command

    ckpt = tmp_path / "ckpt"
    shutil.copytree(calibrated, ckpt)
    result = CliRunner().invoke(export_command, ["--model", str(ckpt), "--int8"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ckpt-int8-onnx" / MODEL_FILE).is_file()
