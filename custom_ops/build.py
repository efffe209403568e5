#!/usr/bin/env python3
"""Build the compiled TokenPrune kernel library (custom_ops/tokenprune.cc) for onnxruntime's CPU provider.

    python custom_ops/build.py            # prints the library path (exit 1 with one line if it cannot be built)
    python custom_ops/build.py --force    # rebuild even when the library is up to date

Standalone on purpose (standard library only, no onnx_tokprune import), and importable:
`onnx_tokprune.runtime.kernel.build_kernel()` loads this file and calls `build()`.

The kernel needs onnxruntime's C/C++ headers, which no PyPI package ships (DESIGN.md §4). They are
looked for, in order, in $TOKPRUNE_ORT_INCLUDE, in a previous download under the build folder, in
/usr/include/onnxruntime (Debian's libonnxruntime-dev), and otherwise fetched from Debian trixie's
`libonnxruntime-dev` (1.21 headers, API 21) with `apt-get download` + `dpkg-deb -x` into the build
folder, through a temporary apt configuration (sources list, lists, cache under a temp folder) on
the machine's configured Debian mirror: nothing is installed and the system apt state is untouched.
The library only uses the OrtApi handed to RegisterCustomOps (no link against libonnxruntime), so
a kernel built against API 21 loads in any newer onnxruntime. When headers or g++ cannot be had,
`build()` prints one line and returns None: models then run the portable ONNX function.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "tokenprune.cc"
BUILD_DIR = HERE / "build"
LIBRARY_NAME = "libtokprune_kernel.so"
HEADERS_DIRNAME = "onnxruntime-headers"
INCLUDE_ENV = "TOKPRUNE_ORT_INCLUDE"
DEBIAN_SUITE = "trixie"
DEBIAN_PACKAGE = "libonnxruntime-dev"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
REQUIRED_HEADERS = ("onnxruntime_c_api.h", "onnxruntime_cxx_api.h")
# -ffp-contract=off: no FMA contraction (results as the references round them); -fno-trapping-math: lets
# the ScoredAttention softmax loops vectorise (nothing traps floating-point exceptions in onnxruntime);
# -Wno-psabi: the 8-float vector helpers are internal and inlined, no ABI crosses the library boundary
CXXFLAGS = ["-O3", "-shared", "-fPIC", "-std=c++17", "-fvisibility=hidden", "-ffp-contract=off", "-fno-trapping-math", "-Wall", "-Wno-psabi"]


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
        errors = [line.strip() for line in lines if re.search(r"\b(error|E):", line)]
        detail = (errors or lines or [f"exit {proc.returncode}"])[0 if errors else -1]
        raise BuildError(f"{what} failed: {detail}")
    return proc.stdout + proc.stderr


def debian_mirror() -> str:
    """The machine's configured Debian mirror (the main archive, not -security), else deb.debian.org."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        for stanza in re.split(r"\n\s*\n", sources.read_text(errors="replace")):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.M))
            uris, suites = fields.get("URIs", "").split(), fields.get("Suites", "")
            if uris and "security" not in suites and "security" not in uris[0]:
                return uris[0].rstrip("/")
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.is_file():
        for line in sources_list.read_text(errors="replace").splitlines():
            match = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match and "security" not in match.group(1) and "security" not in match.group(2):
                return match.group(1).rstrip("/")
    return DEFAULT_MIRROR


def fetch_headers(build_dir: Path) -> Path:
    """Download and unpack Debian trixie's libonnxruntime-dev under build_dir; returns the include dir."""
    target = build_dir / HEADERS_DIRNAME
    include = target / "usr" / "include" / "onnxruntime"
    if _has_headers(include):
        return include
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise BuildError(f"onnxruntime headers not found and {tool} is unavailable to fetch them (set {INCLUDE_ENV})")
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tokprune-apt-") as tmp:
        tmp_path = Path(tmp)
        for sub in ("lists/partial", "cache/archives/partial", "download"):
            (tmp_path / sub).mkdir(parents=True)
        mirror = debian_mirror()
        signed_by = f"[signed-by={KEYRING}] " if KEYRING.is_file() else ""
        (tmp_path / "sources.list").write_text(f"deb {signed_by}{mirror} {DEBIAN_SUITE} main\n")
        apt_opts = [
            f"-o=Dir::Etc::sourcelist={tmp_path / 'sources.list'}",
            "-o=Dir::Etc::sourceparts=-",
            f"-o=Dir::State::Lists={tmp_path / 'lists'}",
            f"-o=Dir::Cache={tmp_path / 'cache'}",
            "-o=APT::Get::List-Cleanup=0",
            "-o=APT::Sandbox::User=root" if os.geteuid() == 0 else "-o=Debug::NoLocking=1",
            "-qq",
        ]
        log = _run(["apt-get", *apt_opts, "update"], f"apt-get update ({mirror} {DEBIAN_SUITE})", timeout=300)
        if not any((tmp_path / "lists").glob("*_Packages*")):  # apt-get update exits 0 on fetch failures
            problems = [line.strip() for line in log.splitlines() if line.startswith(("E:", "W:", "Err"))]
            raise BuildError(f"apt-get update could not fetch {mirror} {DEBIAN_SUITE}" + (f": {problems[0]}" if problems else ""))
        _run(["apt-get", *apt_opts, "download", DEBIAN_PACKAGE], f"apt-get download {DEBIAN_PACKAGE}", cwd=tmp_path / "download")
        debs = sorted((tmp_path / "download").glob(f"{DEBIAN_PACKAGE}_*.deb"))
        if not debs:
            raise BuildError(f"apt-get download {DEBIAN_PACKAGE} produced no .deb")
        unpack = Path(tempfile.mkdtemp(prefix=HEADERS_DIRNAME + "-", dir=build_dir))
        try:
            _run(["dpkg-deb", "-x", str(debs[-1]), str(unpack)], "dpkg-deb -x")
            if not _has_headers(unpack / "usr" / "include" / "onnxruntime"):
                raise BuildError(f"{debs[-1].name} holds no onnxruntime C/C++ headers")
            shutil.rmtree(target, ignore_errors=True)
            unpack.rename(target)
        finally:
            shutil.rmtree(unpack, ignore_errors=True)
    return include


def find_headers(build_dir: Path, fetch: bool = True) -> Path:
    """The include directory holding onnxruntime_c_api.h (fetching Debian's headers when allowed)."""
    explicit = os.environ.get(INCLUDE_ENV)
    if explicit:
        if not _has_headers(Path(explicit)):
            raise BuildError(f"{INCLUDE_ENV}={explicit} holds no {' / '.join(REQUIRED_HEADERS)}")
        return Path(explicit)
    for include in (build_dir / HEADERS_DIRNAME / "usr" / "include" / "onnxruntime", Path("/usr/include/onnxruntime")):
        if _has_headers(include):
            return include
    if not fetch:
        raise BuildError("onnxruntime headers not found")
    return fetch_headers(build_dir)


def api_version(include: Path) -> int:
    match = re.search(r"#define\s+ORT_API_VERSION\s+(\d+)", (include / "onnxruntime_c_api.h").read_text(errors="replace"))
    return int(match.group(1)) if match else 0


def compile_library(source: Path, include: Path, library: Path) -> Path:
    """g++ the kernel into `library` (written beside it, then renamed: no half-written library)."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise BuildError(f"C++ compiler {cxx!r} not found")
    library.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=library.name + ".", suffix=".tmp", dir=library.parent)
    os.close(fd)
    # export RegisterCustomOps only (not the std:: template instances g++ would also export)
    version_script = Path(tmp_name + ".map")
    version_script.write_text("{ global: RegisterCustomOps; local: *; };\n")
    try:
        cmd = [cxx, *CXXFLAGS, f"-I{include}", str(source), "-o", tmp_name, "-Wl,-z,defs", f"-Wl,--version-script={version_script}"]
        _run(cmd, f"{cxx} {source.name}", timeout=600)
        os.replace(tmp_name, library)
    finally:
        for leftover in (tmp_name, version_script):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return library


def is_up_to_date(library: Path, source: Path = SOURCE) -> bool:
    return library.is_file() and (not source.is_file() or library.stat().st_mtime >= source.stat().st_mtime)


def build(
    build_dir: str | os.PathLike = BUILD_DIR,
    force: bool = False,
    source: str | os.PathLike = SOURCE,
    quiet: bool = False,
) -> Path | None:
    """The kernel library under build_dir, compiled when missing, older than the source, or forced.

    Returns None (after one printed line, unless quiet) when headers or a compiler cannot be had.
    """
    build_dir, source = Path(build_dir), Path(source)
    library = build_dir / LIBRARY_NAME
    if not force and is_up_to_date(library, source):
        return library
    try:
        if not source.is_file():
            raise BuildError(f"kernel source {source} not found")
        include = find_headers(build_dir)
        compile_library(source, include, library)
    except (BuildError, OSError) as exc:
        if not quiet:
            print(f"tokprune kernel not built: {exc}; the portable ONNX function will be used", file=sys.stderr)
        return None
    return library


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when the library is up to date")
    parser.add_argument("--build-dir", default=str(BUILD_DIR), help=f"output folder (default {BUILD_DIR})")
    args = parser.parse_args(argv)
    library = build(args.build_dir, force=args.force)
    if library is None:
        return 1
    print(library)
    return 0


if __name__ == "__main__":
    sys.exit(main())
