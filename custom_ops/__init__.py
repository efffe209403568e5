"""The compiled kernels' sources, installed as `onnx_tokprune._custom_ops` (pyproject.toml's package-dir):
tokenprune.cc, build.py (standalone) and the vendored onnxruntime headers in include/onnxruntime/.
Built by `tokprune build-kernel` (onnx_tokprune.runtime.kernel); nothing here is imported at run time."""
