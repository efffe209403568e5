"""Runtime: open an artifact in onnxruntime and run it (onnxruntime + tokenizers only, no torch)."""

from onnx_tokprune.artifact import original_positions
from onnx_tokprune.errors import ArtifactError, InvalidTextError, TextTooLongError
from onnx_tokprune.runtime.session import PrunedSession, open_artifact, session_options
from onnx_tokprune.runtime.text_encoder import TextEncoder

__all__ = [
    "ArtifactError", "InvalidTextError", "PrunedSession", "TextEncoder", "TextTooLongError", "open_artifact",
    "original_positions", "session_options",
]
