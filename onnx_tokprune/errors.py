"""Every error the package raises for bad input, in one place, under one base class.

`TokpruneError` is what the command line catches: it prints the first line of the message (which says
what to do) and exits 1, without a traceback. Each class also derives from the built-in exception a
caller would expect (ValueError, FileExistsError, ...), so `except ValueError` keeps working.
"""

from __future__ import annotations


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type's name when empty), at most
    `limit` characters: what a one-line error quotes of a library's exception."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TokpruneError(Exception):
    """Bad input or a request that cannot be met; the message's first line says what to do."""


class ConfigError(TokpruneError, ValueError):
    """A `tokprune.json` (pruning config) that cannot be used; the message names the field."""


class DataError(TokpruneError, ValueError):
    """A data file that cannot be used."""


class TaskError(TokpruneError, ValueError):
    """An unknown task name."""


class CheckpointError(TokpruneError, ValueError):
    """A model directory (or hub name) that cannot be loaded, or an architecture or head we do not support."""


class ArtifactError(TokpruneError, ValueError):
    """An artifact directory that cannot be opened."""


class ManifestError(ArtifactError):
    """An artifact manifest that is missing, unreadable or malformed."""


class TextTooLongError(TokpruneError, ValueError):
    """An input has more tokens than the model's position embeddings allow."""


class InvalidTextError(TokpruneError, ValueError):
    """An input is not text the tokenizer can take (e.g. a lone surrogate from undecodable bytes)."""


class MissingFileError(TokpruneError, FileNotFoundError):
    """A file the command needs is not there (a tokenizer.json, the kernel's build script)."""


class OutputExistsError(TokpruneError, FileExistsError):
    """The output exists and overwriting was not asked for (or is not safe)."""


class CalibrationError(TokpruneError, ValueError):
    """Calibration cannot meet the request."""


class ExportError(TokpruneError, ValueError):
    """The export cannot proceed."""


class PassError(TokpruneError, ValueError):
    """A graph pass cannot run on this graph, or its result falls short of the architecture's contract."""


class ConversionError(TokpruneError, ValueError):
    """A released checkpoint (LTP, ToP) that cannot be converted."""


class TrainingError(TokpruneError, ValueError):
    """Training cannot start (or finish) with these inputs."""


class ParityError(TokpruneError, AssertionError):
    """The artifact does not compute what the PyTorch model computes."""


class KeptSetError(ParityError):
    """A pruning layer kept different tokens in onnxruntime than in PyTorch."""


class AtolError(ParityError):
    """Logits differ by more than the tolerance."""
