#!/usr/bin/env python3
"""Build the compiled TokenPrune kernel library (tokenprune.cc) for onnxruntime's CPU provider.

    python custom_ops/build.py                  # prints the library path (exit 1 with one line if it cannot be built)
    python custom_ops/build.py --force          # rebuild even when the cached library exists
    python custom_ops/build.py --cache-dir DIR  # cache root other than $XDG_CACHE_HOME/onnx_tokprune

Standalone on purpose (standard library only, no onnx_tokprune import), and importable: the package
ships this folder as `onnx_tokprune._custom_ops` (wheel and editable installs alike) and
`onnx_tokprune.runtime.kernel.build_kernel()` (`tokprune build-kernel`) calls `build()`.

Headers: onnxruntime's C/C++ headers of API 21 (onnxruntime 1.21.0) are vendored, unmodified, in
include/onnxruntime/ (MIT, see the README.md there): no package registry ships them. The library
calls onnxruntime only through the OrtApi handed to RegisterCustomOps (no link against
libonnxruntime), so it loads in any onnxruntime >= 1.21. $TOKPRUNE_ORT_INCLUDE, when set, names
another folder holding onnxruntime_c_api.h and onnxruntime_cxx_api.h to build against instead.

Cache: the library is written, per user, to
`$XDG_CACHE_HOME/onnx_tokprune/kernel-<key>/libtokprune_kernel.so` (default ~/.cache), where <key>
is a short SHA-256 of the kernel source, the headers, the compiler flags and the compiler (its path
and `--version`): a library is reused only for exactly what it was built from. Folders and the
library get the modes the umask gives (0755 / 0644 under umask 022). The compiler is $CXX (default
g++). When a compiler or the headers cannot be had, `build()` prints one line and returns None:
models then run the portable ONNX function.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "tokenprune.cc"
VENDORED_INCLUDE = HERE / "include" / "onnxruntime"
LIBRARY_NAME = "libtokprune_kernel.so"
CACHE_NAME = "onnx_tokprune"
INCLUDE_ENV = "TOKPRUNE_ORT_INCLUDE"
REQUIRED_HEADERS = ("onnxruntime_c_api.h", "onnxruntime_cxx_api.h")
# the headers tokenprune.cc includes, directly or through onnxruntime_cxx_api.h: all go in the cache key
KEY_HEADERS = (*REQUIRED_HEADERS, "onnxruntime_cxx_inline.h", "onnxruntime_float16.h")
KEY_LENGTH = 16
# -ffp-contract=off: no FMA contraction (results as the references round them); -fno-trapping-math: lets
# the ScoredAttention softmax loops vectorise (nothing traps floating-point exceptions in onnxruntime);
# -Wno-psabi: the 8-float vector helpers are internal and inlined, no ABI crosses the library boundary
CXXFLAGS = ["-O3", "-shared", "-fPIC", "-std=c++17", "-fvisibility=hidden", "-ffp-contract=off", "-fno-trapping-math", "-Wall", "-Wno-psabi"]
# export RegisterCustomOps only (not the std:: template instances g++ would also export)
VERSION_SCRIPT = "{ global: RegisterCustomOps; local: *; };\n"
INSTALL_CXX = "install g++ (apt-get install g++, dnf install gcc-c++, apk add g++, ...) or set $CXX to a C++17 compiler"


class BuildError(RuntimeError):
    """The kernel cannot be built here; the message is the one line printed."""


def _has_headers(include: Path) -> bool:
    return all((include / name).is_file() for name in REQUIRED_HEADERS)


def _run(cmd: list[str], what: str, timeout: float = 300, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise BuildError(f"{what}: {cmd[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{what}: timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        errors = [line.strip() for line in lines if re.search(r"\berror:", line)]
        detail = (errors or lines or [f"exit {proc.returncode}"])[0 if errors else -1]
        raise BuildError(f"{what} failed: {detail}")
    return proc.stdout + proc.stderr


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/onnx_tokprune (an absolute $XDG_CACHE_HOME only, as the XDG spec says), else ~/.cache/onnx_tokprune."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return root / CACHE_NAME


def find_headers() -> Path:
    """The include folder holding onnxruntime_c_api.h: $TOKPRUNE_ORT_INCLUDE when set, else the vendored one."""
    explicit = os.environ.get(INCLUDE_ENV)
    if explicit:
        if not _has_headers(Path(explicit)):
            raise BuildError(
                f"${INCLUDE_ENV}={explicit} holds no {' / '.join(REQUIRED_HEADERS)}: point it at onnxruntime's include "
                f"folder, or unset it to use the headers shipped with onnx_tokprune"
            )
        return Path(explicit)
    if not _has_headers(VENDORED_INCLUDE):
        raise BuildError(
            f"the onnxruntime headers shipped with onnx_tokprune are missing from {VENDORED_INCLUDE} (reinstall "
            f"onnx_tokprune), or set ${INCLUDE_ENV} to a folder holding {' and '.join(REQUIRED_HEADERS)} (the include/ "
            f"folder of an onnxruntime >= 1.21 release archive, github.com/microsoft/onnxruntime/releases)"
        )
    return VENDORED_INCLUDE


def api_version(include: Path) -> int:
    match = re.search(r"#define\s+ORT_API_VERSION\s+(\d+)", (include / "onnxruntime_c_api.h").read_text(errors="replace"))
    return int(match.group(1)) if match else 0


def compiler() -> str:
    """The C++ compiler: $CXX (default g++), resolved on PATH; BuildError when there is none."""
    cxx = os.environ.get("CXX") or "g++"
    found = shutil.which(cxx)
    if found is None:
        raise BuildError(f"C++ compiler {cxx!r} not found ($CXX): {INSTALL_CXX}")
    return found


@functools.lru_cache(maxsize=8)
def _compiler_identity(path: str, mtime_ns: int) -> str:
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        return proc.stdout.strip() or proc.stderr.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cache_key(source: Path = SOURCE, include: Path | None = None, cxx: str | None = None) -> str:
    """Short SHA-256 of what the library is built from: source, headers, flags, compiler (path and --version)."""
    include = find_headers() if include is None else include
    cxx = compiler() if cxx is None else cxx
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    add("source", Path(source).read_bytes())
    for name in KEY_HEADERS:
        header = include / name
        add(f"header {name}", header.read_bytes() if header.is_file() else b"<absent>")
    add("flags", "\0".join([*CXXFLAGS, VERSION_SCRIPT]).encode())
    real = os.path.realpath(cxx)
    try:
        mtime = os.stat(real).st_mtime_ns
    except OSError:
        mtime = 0
    add("compiler", f"{real}\0{_compiler_identity(real, mtime)}".encode())
    return digest.hexdigest()[:KEY_LENGTH]


def library_path(cache_dir: str | os.PathLike | None = None, source: str | os.PathLike = SOURCE) -> Path:
    """Where the library for the current source, headers, flags and compiler lives (built or not)."""
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    return root / f"kernel-{cache_key(Path(source))}" / LIBRARY_NAME


def _umask() -> int:
    try:  # Linux >= 4.7: read it without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def compile_library(source: Path, include: Path, library: Path, cxx: str | None = None) -> Path:
    """Compile the kernel into `library`: built in a private temp folder beside it, given the umask's mode
    (0666 & ~umask), then renamed into place, so no half-written library is ever seen."""
    cxx = compiler() if cxx is None else cxx
    library.parent.mkdir(parents=True, exist_ok=True)  # mode 0777 & ~umask
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=library.parent))
    try:
        output, version_script = tmp / library.name, tmp / "exports.map"
        version_script.write_text(VERSION_SCRIPT)
        cmd = [cxx, *CXXFLAGS, f"-I{include}", str(source), "-o", str(output), "-Wl,-z,defs", f"-Wl,--version-script={version_script}"]
        _run(cmd, f"{Path(cxx).name} {source.name}", timeout=600)
        os.chmod(output, 0o666 & ~_umask())
        os.replace(output, library)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return library


def build(
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
    source: str | os.PathLike = SOURCE,
    quiet: bool = False,
) -> Path | None:
    """The kernel library in the cache (`cache_dir`, default `default_cache_dir()`), compiled when missing or forced.

    Returns None (after one printed line, unless quiet) when the source, the headers or a compiler cannot be had.
    """
    source = Path(source)
    try:
        if not source.is_file():
            raise BuildError(f"kernel source {source} not found (reinstall onnx_tokprune)")
        include, cxx = find_headers(), compiler()
        root = default_cache_dir() if cache_dir is None else Path(cache_dir)
        library = root / f"kernel-{cache_key(source, include, cxx)}" / LIBRARY_NAME
        if force or not library.is_file():
            compile_library(source, include, library, cxx)
    except (BuildError, OSError) as exc:
        if not quiet:
            print(f"tokprune kernel not built: {exc}; the portable ONNX function will be used", file=sys.stderr)
        return None
    return library


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached library exists")
    parser.add_argument("--cache-dir", help=f"cache root (default {default_cache_dir()})")
    args = parser.parse_args(argv)
    library = build(args.cache_dir, force=args.force)
    if library is None:
        return 1
    print(library)
    return 0


if __name__ == "__main__":
    sys.exit(main())
