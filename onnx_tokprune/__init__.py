"""onnx_tokprune: token pruning (LTP, ToP) that physically removes tokens in ONNX graphs."""

from onnx_tokprune.config import ConfigError, LayerRule, PruneConfig

__version__ = "0.1.0"

__all__ = ["ConfigError", "LayerRule", "PruneConfig", "__version__"]
