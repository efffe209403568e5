"""INT8 artifacts compute the same on CPUs without VNNI: checked on an emulated AVX2-only CPU.

`qemu-x86_64 -cpu Haswell-v4` (Debian package qemu-user) runs this machine's Python and onnxruntime
on a CPU model with AVX2 but no AVX-512 and no VNNI, so onnxruntime's MLAS takes its AVX2 u8s8 kernels
(VPMADDUBSW, int16 pair sums), whatever the host has. Checked here:
- the control: a MatMul whose full-range (``vnni``) INT8 form saturates there, so the emulation really
  runs the AVX2 path, while the ``portable`` form equals onnx's exact integer reference evaluator;
- pruned (plain and --optimize, with QAttention) and unpruned fused INT8 graphs in the portable setting
  give the same logits and kept sets emulated as on the host.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import RAGGED_LENGTHS, prune_configs, ragged_batch
from onnx_tokprune.config import PruneConfig
from onnx_tokprune.export.baseline import export_unpruned_optimized, quantize_unpruned_optimized
from onnx_tokprune.export.exporter import to_onnx
from onnx_tokprune.export.passes import optimize_pruned
from onnx_tokprune.export.quantize import run_quantize_dynamic, int8_setting, to_int8
from onnx_tokprune.modeling import wrap

QEMU = shutil.which("qemu-x86_64")
CPU_MODEL = "Haswell-v4"  # AVX2 + FMA, no AVX-512, no VNNI

pytestmark = pytest.mark.skipif(
    QEMU is None, reason="qemu-x86_64 not found (apt-get install qemu-user): the AVX2-only CPU cannot be emulated here"
)

RUNNER = textwrap.dedent(
    """
    import sys, numpy as np, onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    for model, feeds, out in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
        session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        inputs = dict(np.load(feeds))
        names = [o.name for o in session.get_outputs()]
        np.savez(out, **dict(zip(names, session.run(None, {k: v for k, v in inputs.items() if k in {i.name for i in session.get_inputs()}}))))
    """
)


def run_models(tmp_path, jobs: list[tuple[onnx.ModelProto, dict[str, np.ndarray]]], emulate: bool) -> list[dict[str, np.ndarray]]:
    """Run each (model, feeds) in a fresh process, under the emulated AVX2 CPU when `emulate`."""
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    args, outs = [], []
    for i, (model, feeds) in enumerate(jobs):
        onnx.save(model, str(tmp_path / f"m{i}.onnx"))
        np.savez(tmp_path / f"in{i}.npz", **feeds)
        out = tmp_path / f"out{i}_{int(emulate)}.npz"
        args += [str(tmp_path / f"m{i}.onnx"), str(tmp_path / f"in{i}.npz"), str(out)]
        outs.append(out)
    prefix = [QEMU, "-cpu", CPU_MODEL] if emulate else []
    proc = subprocess.run([*prefix, sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [dict(np.load(out)) for out in outs]


def saturating_matmul() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One MatMul with large positive activations: pairs of u8 x s8 products overflow int16."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 64])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = (rng.normal(size=(4, 64)) * 3).astype(np.float32)
    x[0] = np.abs(x[0]) * 5
    return model, {"x": x}


def test_emulated_avx2_saturates_full_range_weights_but_not_portable(tmp_path):
    from onnx.reference import ReferenceEvaluator

    model, feeds = saturating_matmul()
    quantized = {name: run_quantize_dynamic(model, int8_setting(name)) for name in ("vnni", "portable")}
    emulated = run_models(tmp_path, [(quantized["vnni"], feeds), (quantized["portable"], feeds)], emulate=True)
    exact = {name: ReferenceEvaluator(m).run(None, feeds)[0] for name, m in quantized.items()}
    vnni_error = float(np.abs(emulated[0]["y"] - exact["vnni"]).max())
    portable_error = float(np.abs(emulated[1]["y"] - exact["portable"]).max())
    print(f"emulated {CPU_MODEL} vs exact integer reference: vnni {vnni_error:.3g}, portable {portable_error:.3g}")
    assert vnni_error > 1.0, "the emulated CPU did not saturate: it is not running MLAS's AVX2 path"
    assert portable_error < 1e-4 * float(np.abs(exact["portable"]).max())


@pytest.fixture(scope="module")
def int8_graphs(tiny_bert):
    cfg = PruneConfig(rule="threshold", layers=tuple(prune_configs()["threshold", "fixed"]), score_normalizer="fixed")
    plain = to_onnx(wrap(tiny_bert, cfg, mode="drop"), 17)
    optimized, _ = optimize_pruned(plain, tiny_bert.config, cfg.pruning_layers)
    baseline, _ = export_unpruned_optimized(tiny_bert, 17)
    return {
        "pruned": to_int8(plain)[0],
        "pruned --optimize": to_int8(optimized)[0],
        "unpruned fused": quantize_unpruned_optimized(baseline)[0],
    }


def test_portable_int8_artifacts_equal_on_avx2_and_host(int8_graphs, tmp_path):
    batches = [ragged_batch(RAGGED_LENGTHS, seed=seed) for seed in (1, 2)]
    jobs = []
    for model in int8_graphs.values():
        for batch in batches:
            jobs.append((model, {k: t.numpy() for k, t in zip(("input_ids", "attention_mask", "token_type_ids"), batch)}))
    host = run_models(tmp_path, jobs, emulate=False)
    emulated = run_models(tmp_path, jobs, emulate=True)
    names = [name for name in int8_graphs for _ in batches]
    for name, a, b in zip(names, host, emulated):
        assert sorted(a) == sorted(b)
        for output in a:
            if output.startswith("kept_index_"):
                assert np.array_equal(a[output], b[output]), f"{name}: {output} differs on the AVX2-only CPU"
        delta = float(np.abs(a["logits"] - b["logits"]).max())
        assert delta <= 1e-5, f"{name}: logits differ by {delta:.3g} on the AVX2-only CPU"
