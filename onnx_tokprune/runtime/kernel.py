"""The compiled TokenPrune kernel library: build it, find it (no torch needed).

```python
from onnx_tokprune.runtime.kernel import build_kernel, find_kernel
library = build_kernel()          # Path, or None (after one line on stderr) when no C++ compiler is found
library = find_kernel()           # $TOKPRUNE_KERNEL_LIBRARY, else the cached library, else None
```

The kernel's source, its build script and the onnxruntime headers it needs (API 21, vendored) ship
with the package as `onnx_tokprune._custom_ops` (the repository's `custom_ops/` folder), in wheel and
editable installs alike, so `build_kernel()` (`tokprune build-kernel`) works from any install: it
compiles once per user into `$XDG_CACHE_HOME/onnx_tokprune/kernel-<key>/libtokprune_kernel.so`
(default `~/.cache`), <key> being a hash of source, headers, flags and compiler, so a library is
never reused after any of them changes. See `custom_ops/build.py` for the build itself
($CXX, $TOKPRUNE_ORT_INCLUDE).

$TOKPRUNE_KERNEL_LIBRARY overrides the lookup: a path registers that library; the empty string
means no kernel (sessions run the portable ONNX function the model carries, as they do when no
library is built).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

from onnx_tokprune.errors import MissingFileError

KERNEL_ENV = "TOKPRUNE_KERNEL_LIBRARY"
SOURCES_PACKAGE = "onnx_tokprune._custom_ops"
_CHECKOUT_SOURCES = Path(__file__).resolve().parents[2] / "custom_ops"
_build_module: ModuleType | None = None

__all__ = ["KERNEL_ENV", "build_kernel", "find_kernel", "kernel_cache_dir", "kernel_sources"]


def kernel_sources() -> Path:
    """The folder holding build.py, tokenprune.cc and include/onnxruntime/: the installed
    `onnx_tokprune._custom_ops` package, else (package run from a checkout that was not reinstalled
    since custom_ops/ became part of the package) the checkout's custom_ops/."""
    try:
        spec = importlib.util.find_spec(SOURCES_PACKAGE)
    except ImportError:
        spec = None
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent
        if (folder / "build.py").is_file():
            return folder
    return _CHECKOUT_SOURCES


def _load_build_module() -> ModuleType:
    global _build_module
    if _build_module is None:
        script = kernel_sources() / "build.py"
        if not script.is_file():
            raise MissingFileError(f"{script} (the kernel's build script) is missing: reinstall onnx_tokprune")
        spec = importlib.util.spec_from_file_location("_tokprune_custom_ops_build", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _build_module = module
    return _build_module


def kernel_cache_dir() -> Path:
    """The per-user cache root: $XDG_CACHE_HOME/onnx_tokprune, default ~/.cache/onnx_tokprune."""
    return _load_build_module().default_cache_dir()


def build_kernel(force: bool = False) -> Path | None:
    """The TokenPrune kernel library for the current source, headers, flags and compiler, compiled
    into the user cache first when it is not there yet (or `force`d).

    Returns None, after printing one line to stderr, when it cannot be built here (no C++ compiler,
    $TOKPRUNE_ORT_INCLUDE without the headers, an unwritable cache).
    """
    return _load_build_module().build(force=force)


def find_kernel() -> Path | None:
    """The kernel library to register, never building one.

    $TOKPRUNE_KERNEL_LIBRARY set and non-empty: that path, as given (a wrong path fails loudly when a
    session registers it); set to the empty string: None (no kernel). Otherwise the cached library
    built from the current source, headers, flags and compiler when it exists, else None.
    """
    explicit = os.environ.get(KERNEL_ENV)
    if explicit is not None:
        return Path(explicit) if explicit else None
    try:
        build = _load_build_module()
    except OSError:
        return None
    try:
        library = build.library_path()
    except (build.BuildError, OSError):  # no headers or compiler: nothing can have been built with them
        return None
    return library if library.is_file() else None
