"""Portability: the exported artifact runs in onnxruntime-node with the same kept sets and logits as Python.

Covers the portable tokprune functions (TokenPrune, ScoredAttention, inlined by onnxruntime since Node
cannot load the compiled kernel) and the `--optimize` graph with its com.microsoft fused ops (Attention,
SkipLayerNormalization, EmbedLayerNormalization, BiasGelu). Needs `node` on PATH; onnxruntime-node is
installed once with `npm install --ignore-scripts` (its CPU binaries ship in the npm package, the
post-install script would only fetch GPU ones) into
${XDG_CACHE_HOME:-~/.cache}/onnx_tokprune/node-onnxruntime-<version>, or taken from
$TOKPRUNE_NODE_MODULES (a node_modules directory, or a directory holding one, with onnxruntime-node).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from conftest import SST2_SENTENCES
from onnx_tokprune.cli import calibrate_command, export_command
from onnx_tokprune.data.text import TextExample
from onnx_tokprune.runtime import open_artifact
from onnx_tokprune.artifact import original_positions

ORT_NODE_VERSION = "1.30.0"
"""Pinned onnxruntime-node (its ORT core is 1.30.0; newest on npm next to the Python onnxruntime 1.32)."""
NODE_MODULES_ENV = "TOKPRUNE_NODE_MODULES"
RUNNER = Path(__file__).parent / "node" / "run_artifact.mjs"
INSTALL_TIMEOUT_S = 900
NODE_TIMEOUT_S = 180
LOGIT_ATOL = 1e-5
FUSED_OPS = {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu"}
VARIANTS = {
    "portable": [],
    "optimize": ["--optimize"],
    "optimize-opset18": ["--optimize", "--opset", "18"],
}


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _npm_error(text: str, lines: int = 6) -> str:
    """The head of npm's error output, without the JavaScript stack."""
    kept = [line for line in text.splitlines() if line.strip() and not line.removeprefix("npm error").lstrip().startswith("at ")]
    return "\n".join(kept[:lines])


def _installed_version(node_modules: Path) -> str | None:
    package = node_modules / "onnxruntime-node" / "package.json"
    try:
        return json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def _smoke(node: str, node_modules: Path) -> dict:
    """onnxruntime-node's env.versions, loading its native binding; skip when it cannot load here."""
    script = (
        "const m = require('node:module').createRequire(process.argv[1] + '/_.js');"
        "console.log(JSON.stringify(m('onnxruntime-node').env.versions));"
    )
    try:
        done = subprocess.run([node, "-e", script, str(node_modules)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip(f"loading onnxruntime-node from {node_modules} took over 120 s")
    if done.returncode != 0:
        pytest.skip(
            f"onnxruntime-node in {node_modules} does not load with {node} (no binary for this platform, "
            f"or Node too old?):\n{_tail(done.stderr)}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onnx_tokprune" / f"node-onnxruntime-{ORT_NODE_VERSION}"


def _install(node: str) -> Path:
    """node_modules holding onnxruntime-node@ORT_NODE_VERSION, installed into the cache dir when absent.

    npm installs into a temporary sibling that is renamed into place only once it loads, so a
    half-finished install is never reused."""
    final = _cache_dir()
    if _installed_version(final / "node_modules") == ORT_NODE_VERSION:
        return final / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"npm is not on PATH, so onnxruntime-node@{ORT_NODE_VERSION} cannot be installed (or set ${NODE_MODULES_ENV})")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    command = [
        npm, "install", "--prefix", str(staging), "--ignore-scripts", "--no-audit", "--no-fund",
        "--no-save", "--no-package-lock", "--loglevel=error",
        # fail within seconds, not minutes, when the registry is unreachable
        "--fetch-retries=1", "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=10000",
        f"onnxruntime-node@{ORT_NODE_VERSION}",
    ]
    env = {**os.environ, "npm_config_update_notifier": "false"}
    start = time.perf_counter()
    try:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env)
        except subprocess.TimeoutExpired:
            pytest.skip(f"`npm install onnxruntime-node@{ORT_NODE_VERSION}` took over {INSTALL_TIMEOUT_S} s (registry unreachable?)")
        if done.returncode != 0 or _installed_version(staging / "node_modules") != ORT_NODE_VERSION:
            pytest.skip(
                f"cannot install onnxruntime-node@{ORT_NODE_VERSION} with npm (no registry?), exit {done.returncode}:\n"
                f"{_npm_error(done.stderr + done.stdout)}"
            )
        _smoke(node, staging / "node_modules")
        if final.exists():  # a stale, incomplete copy (only renamed in when complete, so unexpected)
            shutil.rmtree(final, ignore_errors=True)
        try:
            staging.rename(final)
        except OSError:  # another process renamed its copy in first
            if _installed_version(final / "node_modules") != ORT_NODE_VERSION:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"installed onnxruntime-node@{ORT_NODE_VERSION} into {final} in {time.perf_counter() - start:.1f} s")
    return final / "node_modules"


@pytest.fixture(scope="module")
def ort_node():
    """(node executable, node_modules dir holding onnxruntime-node, its env.versions); skip when unavailable."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("`node` is not on PATH: install Node.js to check that the artifact runs in onnxruntime-node")
    given = os.environ.get(NODE_MODULES_ENV)
    if given:
        candidates = [Path(given), Path(given) / "node_modules"]
        found = [p for p in candidates if _installed_version(p) is not None]
        if not found:
            pytest.fail(f"${NODE_MODULES_ENV}={given} holds no onnxruntime-node (looked for onnxruntime-node/package.json there and in node_modules/)")
        node_modules = found[0]
    else:
        node_modules = _install(node)
    return node, node_modules, _smoke(node, node_modules)


@pytest.fixture(scope="module")
def calibrated(tiny_checkpoint, tmp_path_factory):
    data = tmp_path_factory.mktemp("node_data") / "sentences.txt"
    data.write_text("\n".join(SST2_SENTENCES) + "\n")
    out = tmp_path_factory.mktemp("node_cal") / "ckpt"
    args = ["--model", tiny_checkpoint, "--data", data, "--keep", "0.5", "--output", out]
    result = CliRunner().invoke(calibrate_command, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return out


def _encode(array: np.ndarray) -> dict:
    assert array.dtype == np.int64, array.dtype
    return {"dims": list(array.shape), "data": array.ravel().tolist()}


def _decode(name: str, value: dict) -> np.ndarray:
    if value["type"] in ("float32", "float64", "float16"):
        data = np.array([float(x) for x in value["data"]], dtype=np.float64)  # float(): "NaN", "Infinity" too
    elif value["type"] in ("int64", "int32", "int8", "uint8", "bool"):
        data = np.array(value["data"], dtype=np.int64)
    else:
        raise AssertionError(f"Node output {name} has unexpected type {value['type']}")
    return data.reshape(value["dims"])


def run_in_node(node: str, node_modules: Path, model: Path, batches: list[dict], work: Path) -> dict:
    feeds_file, out_file = work / "node_feeds.json", work / "node_out.json"
    feeds_file.write_text(json.dumps({"batches": [{k: _encode(v) for k, v in b.items()} for b in batches]}))
    command = [node, str(RUNNER), str(node_modules), str(model), str(feeds_file), str(out_file)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"onnxruntime-node ran {model} for over {NODE_TIMEOUT_S} s")
    assert done.returncode == 0, (
        f"onnxruntime-node could not run {model} (exit {done.returncode}):\n{_tail(done.stderr + done.stdout, 30)}"
    )
    return json.loads(out_file.read_text())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_node_matches_python(ort_node, calibrated, variant, tmp_path):
    node, node_modules, versions = ort_node
    artifact = tmp_path / "art"
    args = ["--model", calibrated, "--output", artifact, *VARIANTS[variant]]
    result = CliRunner().invoke(export_command, [str(a) for a in args])
    assert result.exit_code == 0, result.output

    # The graph holds what this test claims to port: the portable functions, and the fused ops with --optimize.
    model = onnx.load(str(artifact / "model.onnx"), load_external_data=False)
    assert {f.name for f in model.functions if f.domain == "tokprune"} == {"TokenPrune", "ScoredAttention"}
    fused = {n.op_type for n in model.graph.node if n.domain == "com.microsoft"}
    assert fused == (FUSED_OPS if "--optimize" in VARIANTS[variant] else set()), fused

    session = open_artifact(artifact, threads=1, kernel_library=False)
    groups = [[s] for s in SST2_SENTENCES] + [SST2_SENTENCES[:8]]  # batch 1 each, then a ragged batch of 8
    batches = [session.text_encoder([TextExample(s) for s in group]) for group in groups]
    assert len(set(batches[-1]["attention_mask"].sum(1).tolist())) > 1, "the batch of 8 should be ragged"
    expected = [session.run(b) for b in batches]
    got = run_in_node(node, node_modules, artifact / "model.onnx", batches, tmp_path)
    where = f"onnxruntime-node {versions} vs Python, {variant} artifact"

    assert set(got["output_names"]) == set(session.output_names), f"{where}: output names"
    kept_names = [n for n in session.output_names if n.startswith("kept_index_")]
    assert "logits" in session.output_names and len(kept_names) == 2, session.output_names
    worst = 0.0
    for i, (group, want, have) in enumerate(zip(groups, expected, got["batches"])):
        at = f"{where}, batch {i} (size {len(group)})"
        assert set(have) == set(want), f"{at}: outputs {sorted(have)} != {sorted(want)}"
        have = {k: _decode(k, v) for k, v in have.items()}
        for name in kept_names:
            assert got["batches"][i][name]["type"] == "int64", f"{at}: {name} type"
            np.testing.assert_array_equal(have[name], want[name], err_msg=f"{at}: {name} (kept set) differs")
        for name, pos in original_positions(want).items():
            np.testing.assert_array_equal(
                original_positions(have)[name], pos, err_msg=f"{at}: original positions of {name} differ"
            )
        assert have["logits"].shape == want["logits"].shape, f"{at}: logits shape"
        delta = float(np.abs(have["logits"] - want["logits"].astype(np.float64)).max())
        assert delta <= LOGIT_ATOL, f"{at}: max |Δlogit| {delta:.3g} > {LOGIT_ATOL}"
        worst = max(worst, delta)
        for name in set(want) - {"logits", *kept_names}:  # any further output: floats close, ints exact
            if np.issubdtype(want[name].dtype, np.floating):
                np.testing.assert_allclose(have[name], want[name], rtol=0, atol=LOGIT_ATOL, err_msg=f"{at}: {name}")
            else:
                np.testing.assert_array_equal(have[name], want[name], err_msg=f"{at}: {name}")

    # Pruning really happened on the ragged batch: fewer kept than input positions, padding (-1) in kept sets.
    last, width = expected[-1], batches[-1]["input_ids"].shape[1]
    assert last[kept_names[-1]].shape[1] < width and (last[kept_names[-1]] < 0).any()
    print(f"{where}: {len(groups)} batches, kept sets equal, max |Δlogit| = {worst:.3g}")
