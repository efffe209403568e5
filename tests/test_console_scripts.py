"""Every console script of pyproject.toml, installed, run as a user runs it (a subprocess of this
environment's bin/, which under .ci/run is a brand-new venv holding only what the README installs):
all answer --help, and each verb's main path works on a tiny model and real SST-2 rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import make_small_glue

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def script(name: str) -> str:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"console script {name} is not installed in {BIN}: is the package installed (pip install -e .)?")
    return str(path)


def run(name: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([script(name), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)
    assert proc.returncode == 0, f"{name} {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_console_script_answers_help(name):
    assert "Usage:" in run(name, "--help").stdout


def test_runs_in_the_environment_it_was_installed_into():
    """Under .ci/run: the interpreter is the fresh venv's, and nothing comes from the machine's site-packages."""
    venv = os.environ.get("TOKPRUNE_CI_VENV")
    if not venv:
        pytest.skip("not under .ci/run (TOKPRUNE_CI_VENV unset)")
    import onnxruntime
    import torch
    import transformers

    assert Path(sys.prefix).resolve() == Path(venv).resolve() and sys.prefix != sys.base_prefix
    for module in (torch, transformers, onnxruntime, pytest):
        assert Path(module.__file__).resolve().is_relative_to(Path(venv).resolve()), f"{module.__name__} from {module.__file__}"


@pytest.fixture(scope="module")
def small_glue(tmp_path_factory):
    return make_small_glue(tmp_path_factory.mktemp("glue"))


def test_every_verb_main_path(tiny_checkpoint, small_glue, tmp_path):
    data = small_glue / "SST-2" / "dev.tsv"
    common = ["--task", "sst2", "--data-dir", small_glue, "--batch-size", 16, "--max-length", 64]
    ft, cal, art = tmp_path / "ft", tmp_path / "cal", tmp_path / "cal-onnx"
    run("tokprune-train", "finetune", "--model", tiny_checkpoint, "--output", ft, "--epochs", 1, *common)
    run("tokprune-calibrate", "--model", ft, "--data", data, "--keep", "0.5", "--output", cal)
    run("tokprune-export", "--model", cal, "--optimize", "--output", art)
    assert "parity OK" in run("tokprune-parity", "--model", cal, "--artifact", art, "--data", data, "--samples", 16).stdout
    bench = tmp_path / "bench"
    run("tokprune-bench", "--artifact", art, "--data", data, "--samples", 4, "--repeats", 1, "--output", bench)
    assert {"bench.json", "bench.md", "bench.png"} <= {p.name for p in bench.iterdir()}
    run("tokprune-show", "--artifact", art, "--text", "a gorgeous , witty , seductive movie .", "--png", tmp_path / "show.png")
    assert (tmp_path / "show.png").stat().st_size > 0
    report = tmp_path / "eval.json"
    run("tokprune-eval", "--model", cal, "--artifact", art, "--task", "sst2", "--data-dir", small_glue, "--json", report)
    assert {r["source"] for r in json.loads(report.read_text())} >= {"pytorch-drop", "onnxruntime"}
    run("tokprune-train", "ltp", "--model", ft, "--output", tmp_path / "ltp", "--soft-epochs", 1, "--hard-epochs", 1, *common)
    top = tmp_path / "top"
    run("tokprune-train", "top", "--model", ft, "--output", top, "--target-flops", 0.4, "--bins", 5, "--reg-lr", 1.0,
        "--epochs", 6, "--warmup-epochs", 1, "--top-k", 5, "--rank-weight", 0.1, *common)
    run("tokprune-match-flops", "--model", top, "--data", data, "--output", tmp_path / "top-matched", "--samples", 16)
    assert Path(run("tokprune-build-kernel").stdout.strip().splitlines()[-1]).is_file()
    assert "top" in run("tokprune-import", "--help").stdout
