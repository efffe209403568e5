"""Runtime: open an artifact in onnxruntime and run it (onnxruntime + tokenizers only)."""

from onnx_tokprune.runtime.session import ArtifactError, PrunedSession, open_artifact, session_options
from onnx_tokprune.runtime.text_encoder import InvalidTextError, TextEncoder, TextTooLongError

__all__ = ["ArtifactError", "InvalidTextError", "PrunedSession", "TextEncoder", "TextTooLongError", "open_artifact", "session_options"]
