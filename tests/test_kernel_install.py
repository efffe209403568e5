"""The compiled kernel from any install: the wheel ships its sources and headers, `tokprune build-kernel`
builds it into the per-user cache (keyed on what it is built from, files as the umask says), and a
wheel installed in a fresh venv outside the checkout builds, registers and holds parity with it.

The `install` tests (marker) build a wheel of this checkout and install it in a new venv that sees the
current environment's dependencies through a .pth line (not its editable onnx_tokprune).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import SST2_SENTENCES
from onnx_tokprune.runtime import kernel

REPO = Path(__file__).resolve().parents[1]
FAKE_CXX = """#!/bin/sh
# stands in for g++: writes a dummy "library" where -o says, logging each compile
while [ $# -gt 0 ]; do
    if [ "$1" = "-o" ]; then shift; printf 'lib' > "$1"; echo "$1" >> "$(dirname "$0")/calls"; fi
    shift
done
"""


@pytest.fixture
def build_module():
    return kernel._load_build_module()


@pytest.fixture
def fake_cxx(tmp_path, monkeypatch):
    """$CXX = a script that 'compiles' instantly; returns the file it logs each call to."""
    script = tmp_path / "bin" / "fake-g++"
    script.parent.mkdir()
    script.write_text(FAKE_CXX)
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(kernel.KERNEL_ENV, raising=False)
    monkeypatch.delenv("TOKPRUNE_ORT_INCLUDE", raising=False)
    return script.parent / "calls"


def _stderr_of(fn, *args, **kwargs):
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        value = fn(*args, **kwargs)
    return value, buffer.getvalue()


# ---- packaging ----------------------------------------------------------------------------------


def test_packages_list_names_every_subpackage():
    """pyproject lists packages explicitly (for the custom_ops/ mapping): none may be forgotten."""
    tomllib = pytest.importorskip("tomllib")
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "onnx_tokprune").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk | {"onnx_tokprune._custom_ops"} == set(setuptools_cfg["packages"])
    assert setuptools_cfg["package-dir"] == {"onnx_tokprune._custom_ops": "custom_ops"}


def test_sources_and_vendored_headers_are_found():
    sources = kernel.kernel_sources()
    for name in ("build.py", "tokenprune.cc", "include/onnxruntime/onnxruntime_c_api.h", "include/onnxruntime/LICENSE"):
        assert (sources / name).is_file(), name
    build = kernel._load_build_module()
    assert build.api_version(build.VENDORED_INCLUDE) == 21
    for header in build.KEY_HEADERS:  # everything tokenprune.cc includes is vendored
        assert (build.VENDORED_INCLUDE / header).is_file(), header


# ---- cache key, lookup, errors ------------------------------------------------------------------


def test_cache_key_follows_source_headers_flags_and_compiler(build_module, fake_cxx, tmp_path, monkeypatch):
    source = tmp_path / "tokenprune.cc"
    source.write_bytes(build_module.SOURCE.read_bytes())
    include = tmp_path / "include"
    shutil.copytree(build_module.VENDORED_INCLUDE, include)
    cxx = build_module.compiler()
    key = build_module.cache_key(source, include, cxx)
    assert key == build_module.cache_key(source, include, cxx) and len(key) == 16
    assert build_module.library_path(tmp_path / "c", source) == tmp_path / "c" / f"kernel-{key}" / "libtokprune_kernel.so"

    source.write_bytes(source.read_bytes() + b"\n// changed\n")
    changed_source = build_module.cache_key(source, include, cxx)
    assert changed_source != key
    with open(include / "onnxruntime_float16.h", "a") as header:
        header.write("\n")
    changed_header = build_module.cache_key(source, include, cxx)
    assert changed_header != changed_source
    monkeypatch.setattr(build_module, "CXXFLAGS", [*build_module.CXXFLAGS, "-g"])
    changed_flags = build_module.cache_key(source, include, cxx)
    assert changed_flags != changed_header
    other_cxx = tmp_path / "bin" / "other-g++"
    other_cxx.write_text(FAKE_CXX.replace("stands in", "also stands in"))
    other_cxx.chmod(0o755)
    assert build_module.cache_key(source, include, str(other_cxx)) != changed_flags


def test_build_caches_per_key_and_find_kernel_follows(build_module, fake_cxx, tmp_path):
    library = build_module.build()
    assert library is not None and library.parent.parent == tmp_path / "cache" / "onnx_tokprune"
    assert kernel.find_kernel() == library == kernel.build_kernel()
    assert len(fake_cxx.read_text().splitlines()) == 1  # the second build_kernel() reused it
    kernel.build_kernel(force=True)
    assert len(fake_cxx.read_text().splitlines()) == 2
    assert not [p for p in library.parent.iterdir() if p != library]  # no temp files left


def test_find_kernel_environment(fake_cxx, monkeypatch, tmp_path):
    assert kernel.find_kernel() is None  # nothing built in this cache
    monkeypatch.setenv(kernel.KERNEL_ENV, str(tmp_path / "given.so"))
    assert kernel.find_kernel() == tmp_path / "given.so"
    monkeypatch.setenv(kernel.KERNEL_ENV, "")
    kernel.build_kernel()
    assert kernel.find_kernel() is None  # empty: no kernel, even with one built


def test_include_variable_without_headers_is_one_line(build_module, fake_cxx, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TOKPRUNE_ORT_INCLUDE", str(empty))
    with pytest.raises(build_module.BuildError, match=r"\$TOKPRUNE_ORT_INCLUDE=.*onnxruntime_c_api\.h") as info:
        build_module.find_headers()
    assert "\n" not in str(info.value)
    library, stderr = _stderr_of(kernel.build_kernel)
    assert library is None and len(stderr.strip().splitlines()) == 1
    assert "$TOKPRUNE_ORT_INCLUDE" in stderr and str(empty) in stderr
    assert kernel.find_kernel() is None


def test_missing_vendored_headers_name_the_variable(build_module, fake_cxx, tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "VENDORED_INCLUDE", tmp_path / "gone")
    library, stderr = _stderr_of(build_module.build)
    assert library is None and len(stderr.strip().splitlines()) == 1
    assert "$TOKPRUNE_ORT_INCLUDE" in stderr and "github.com/microsoft/onnxruntime/releases" in stderr


def test_missing_compiler_is_one_line(fake_cxx, monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    library, stderr = _stderr_of(kernel.build_kernel)
    assert library is None and len(stderr.strip().splitlines()) == 1
    assert "$CXX" in stderr and "install g++" in stderr
    assert kernel.find_kernel() is None


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_modes_follow_the_umask(fake_cxx, tmp_path, umask, file_mode, dir_mode):
    """The library and its folders as the umask says (not mkstemp's 0600 / mkdtemp's 0700)."""
    script = "import sys; from onnx_tokprune.runtime.kernel import build_kernel; lib = build_kernel(); print(lib); sys.exit(lib is None)"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(umask)
    )
    assert proc.returncode == 0, proc.stderr
    library = Path(proc.stdout.strip())
    assert stat.S_IMODE(library.stat().st_mode) == file_mode
    assert stat.S_IMODE(library.parent.stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "cache" / "onnx_tokprune").stat().st_mode) == dir_mode


# ---- a wheel in a fresh venv, outside the checkout ----------------------------------------------


def _compiler_or_skip():
    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        pytest.skip(f"no C++ compiler ({cxx}) to build the kernel with")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel of this checkout, built from a copy of what the build reads (setuptools writes build/ and
    *.egg-info/ beside the sources; stale files there would leak into later wheels of the checkout).
    custom_ops/build/ is copied too when present, so the wheel is seen to leave it out."""
    out = tmp_path_factory.mktemp("wheel")
    tree = out / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, tree / name)
    for name in ("onnx_tokprune", "custom_ops"):
        shutil.copytree(REPO / name, tree / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", str(tree), "-w", str(out)]
    if importlib.util.find_spec("setuptools") is not None:
        cmd.insert(4, "--no-build-isolation")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("onnx_tokprune-*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A new venv holding the wheel; the current environment's site-packages reach it through a .pth line
    (a .pth line adds the folder, not the .pth files in it: the editable install's finder stays off)."""
    _compiler_or_skip()
    root = tmp_path_factory.mktemp("install")
    env_dir = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    purelib = Path(
        subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip()
    )
    outer = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    (purelib / "_tokprune_outer_env.pth").write_text("".join(f"{p}\n" for p in outer))
    env = _venv_env(env_dir, root)
    proc = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--ignore-installed", "--no-index", "--disable-pip-version-check", "-q", str(wheel)],
        capture_output=True, text=True, timeout=300, env=env, cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "bin": env_dir / "bin", "python": python, "purelib": purelib, "env": env, "cache": root / "cache"}


def _venv_env(env_dir: Path, root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", kernel.KERNEL_ENV, "TOKPRUNE_ORT_INCLUDE")}
    env.update(
        PATH=f"{env_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        XDG_CACHE_HOME=str(root / "cache"),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONNOUSERSITE="1",
    )
    return env


def _run_in(venv, *cmd, timeout=300, umask=None):
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=venv["env"], cwd=venv["root"],
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.install
def test_wheel_ships_sources_and_headers_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("build.py", "tokenprune.cc", "__init__.py", *(f"include/onnxruntime/{h}" for h in (
        "onnxruntime_c_api.h", "onnxruntime_cxx_api.h", "onnxruntime_cxx_inline.h", "onnxruntime_float16.h", "LICENSE", "README.md"
    ))):
        assert f"onnx_tokprune/_custom_ops/{name}" in names, name
    assert not [n for n in names if n.endswith(".so") or "/build/" in n or "onnxruntime-headers" in n or n.startswith("custom_ops/")]


@pytest.mark.install
def test_wheel_in_fresh_venv_builds_kernel(venv):
    where = _run_in(venv, venv["python"], "-c", "import onnx_tokprune.runtime.kernel as k; print(k.__file__); print(k.kernel_sources())")
    module_file, sources = (Path(line) for line in where.split())
    assert module_file.is_relative_to(venv["purelib"]) and sources == venv["purelib"] / "onnx_tokprune" / "_custom_ops"
    assert not module_file.is_relative_to(REPO)

    library = Path(_run_in(venv, venv["bin"] / "tokprune", "build-kernel", timeout=600, umask=0o022).strip().splitlines()[-1])
    assert library.is_file() and library.is_relative_to(venv["cache"] / "onnx_tokprune")
    assert stat.S_IMODE(library.stat().st_mode) == 0o644 and stat.S_IMODE(library.parent.stat().st_mode) == 0o755
    found = _run_in(venv, venv["python"], "-c", "from onnx_tokprune.runtime.kernel import find_kernel; print(find_kernel())")
    assert Path(found.strip()) == library
    venv["library"] = library


@pytest.mark.install
def test_wheel_in_fresh_venv_parity_with_kernel(venv, tiny_checkpoint):
    library = venv.get("library") or Path(_run_in(venv, venv["bin"] / "tokprune", "build-kernel", timeout=600).strip().splitlines()[-1])
    work = venv["root"] / "work"
    work.mkdir(exist_ok=True)
    data = work / "sentences.txt"
    data.write_text("\n".join(SST2_SENTENCES) + "\n")
    checkpoint, artifact = work / "cal", work / "art"
    _run_in(venv, venv["bin"] / "tokprune-calibrate", "--model", tiny_checkpoint, "--data", data, "--keep", "0.5", "--output", checkpoint)
    _run_in(venv, venv["bin"] / "tokprune-export", "--model", checkpoint, "--output", artifact)
    parity = _run_in(venv, venv["bin"] / "tokprune-parity", "--model", checkpoint, "--artifact", artifact, "--data", data, "--batch-sizes", "1,4")
    assert "parity OK" in parity
    registered = _run_in(
        venv, venv["python"], "-c", f"from onnx_tokprune.runtime import open_artifact; print(open_artifact({str(artifact)!r}).kernel_library)"
    )
    assert Path(registered.strip()) == library
