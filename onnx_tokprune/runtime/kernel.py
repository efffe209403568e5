"""The compiled TokenPrune kernel library: build it, find it (no torch needed).

```python
from onnx_tokprune.runtime.kernel import build_kernel, find_kernel
library = build_kernel()          # Path, or None when g++ or the onnxruntime headers cannot be had
library = find_kernel()           # $TOKPRUNE_KERNEL_LIBRARY, else the built library, else None
```

The build logic lives in the repository's `custom_ops/build.py` (a standalone script: see its
docstring for how the onnxruntime headers are fetched); this module loads that file. The library is
cached in `custom_ops/build/` of the repository when the package is installed editable (or run from
a checkout), else in `~/.cache/onnx_tokprune/` (`$XDG_CACHE_HOME/onnx_tokprune/`). A non-editable
install does not ship the kernel source: there `build_kernel()` only returns a library already in
the cache (e.g. one built with `python custom_ops/build.py --build-dir ~/.cache/onnx_tokprune`).
Without a kernel, onnxruntime runs the op's portable ONNX function carried in the model.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

KERNEL_ENV = "TOKPRUNE_KERNEL_LIBRARY"
LIBRARY_NAME = "libtokprune_kernel.so"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_BUILD_SCRIPT = _REPO_ROOT / "custom_ops" / "build.py"
_build_module: ModuleType | None = None

__all__ = ["KERNEL_ENV", "build_kernel", "find_kernel", "kernel_cache_dir"]


def _in_checkout() -> bool:
    """True when the package is imported from a source checkout (editable install) that has custom_ops/."""
    return _BUILD_SCRIPT.is_file() and (_REPO_ROOT / "custom_ops" / "tokenprune.cc").is_file()


def kernel_cache_dir() -> Path:
    """Where the built library lives: custom_ops/build/ in a checkout, else the user cache."""
    if _in_checkout():
        return _REPO_ROOT / "custom_ops" / "build"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "onnx_tokprune"


def _load_build_module() -> ModuleType:
    global _build_module
    if _build_module is None:
        spec = importlib.util.spec_from_file_location("_tokprune_custom_ops_build", _BUILD_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _build_module = module
    return _build_module


def build_kernel(force: bool = False) -> Path | None:
    """The TokenPrune kernel library, compiled first when missing, older than its source, or `force`d.

    Returns None, after printing one line to stderr, when it cannot be built here (no g++, no
    onnxruntime headers and no way to fetch them, or no kernel source in a non-editable install).
    """
    build_dir = kernel_cache_dir()
    if not _in_checkout():
        library = build_dir / LIBRARY_NAME
        if library.is_file() and not force:
            return library
        print(
            f"tokprune kernel not built: this install has no kernel source (custom_ops/); build it from a "
            f"checkout with `python custom_ops/build.py --build-dir {build_dir}`; the portable ONNX function will be used",
            file=sys.stderr,
        )
        return None
    return _load_build_module().build(build_dir, force=force)


def find_kernel() -> Path | None:
    """$TOKPRUNE_KERNEL_LIBRARY when set (returned as given, so a wrong path fails loudly at
    registration), else the built library when it exists, else None. Never builds."""
    explicit = os.environ.get(KERNEL_ENV)
    if explicit:
        return Path(explicit)
    library = kernel_cache_dir() / LIBRARY_NAME
    return library if library.is_file() else None
