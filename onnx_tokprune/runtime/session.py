"""Open an exported artifact in onnxruntime and classify text (no torch needed).

```python
from onnx_tokprune.runtime import open_artifact
session = open_artifact("out/minilm_sst2_cal50-onnx")
session.classify(["a charming and often affecting journey"])   # [{'label': ..., 'score': ...}]
```

The compiled TokenPrune kernel (`tokprune build-kernel`) is registered when it is found
($TOKPRUNE_KERNEL_LIBRARY, else the built library: `runtime.kernel.find_kernel`) or given; otherwise,
or with `kernel_library=False`, onnxruntime inlines the op's portable ONNX function carried in the
model. Both compute the same thing (tests/test_kernel.py).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from onnx_tokprune.data.text import TextExample
from onnx_tokprune.errors import ArtifactError
from onnx_tokprune.runtime.cpus import available_cpus
from onnx_tokprune.runtime.kernel import KERNEL_ENV, find_kernel
from onnx_tokprune.runtime.text_encoder import TextEncoder

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "tokprune.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
KernelChoice = str | os.PathLike | bool | None


def session_options(
    threads: int | None = None, kernel_library: str | os.PathLike | None = None, spinning: bool = True
) -> ort.SessionOptions:
    """SessionOptions with fixed intra-op threads and, when given, the TokenPrune kernel registered.

    `spinning=False` stops idle worker threads from busy-waiting: needed when several sessions
    take turns in one process (benchmarks), or one session's spinning threads slow the next.
    """
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if kernel_library:
        options.register_custom_ops_library(str(kernel_library))
    return options


class PrunedSession:
    """An artifact's onnxruntime session plus its tokenizer and labels."""

    def __init__(
        self,
        artifact: str | os.PathLike,
        threads: int | None = None,
        kernel_library: KernelChoice = None,
        spinning: bool = True,
    ):
        """`threads`: intra-op threads, by default the CPUs this process can really use
        (runtime.cpus.available_cpus, not the host's count onnxruntime would take). `kernel_library`:
        None finds the compiled kernel (`find_kernel`), False uses the portable function, a path
        registers that library. Raises ArtifactError (one line) for a directory that
        is not a complete tokprune artifact or a model.onnx onnxruntime cannot load."""
        self.path = Path(artifact)
        self.manifest, config = read_artifact(self.path)
        model_file = self.path / MODEL_FILE
        if kernel_library is None:
            kernel_library = find_kernel()
        kernel_library = kernel_library or None
        if kernel_library is not None and not Path(kernel_library).is_file():
            raise ArtifactError(f"TokenPrune kernel library {kernel_library} not found: build it with `tokprune build-kernel` or unset ${KERNEL_ENV}")
        self.kernel_library = kernel_library
        try:
            options = session_options(threads or available_cpus(), kernel_library, spinning)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ArtifactError(
                f"TokenPrune kernel library {kernel_library} cannot be registered ({_short(e)}): rebuild it with `tokprune build-kernel`"
            ) from None
        try:
            self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ArtifactError(f"{model_file} cannot be loaded: {_short(e)}; re-export it (tokprune-export)") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if "input_ids" not in self.input_names or not set(self.input_names) <= set(INPUT_NAMES) or "logits" not in self.output_names:
            raise ArtifactError(
                f"{model_file} is not a tokprune graph: it takes {self.input_names} and gives {self.output_names}, "
                f"not {'/'.join(INPUT_NAMES)} -> logits: pass a directory written by tokprune-export"
            )
        try:
            tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        except Exception as e:  # the tokenizers library raises a bare Exception
            raise ArtifactError(f"{self.path / 'tokenizer.json'} cannot be loaded ({_short(e)}): copy the checkpoint's tokenizer.json there") from None
        self.text_encoder = TextEncoder(tokenizer, _max_positions(config))
        labels = config.get("id2label", {})
        try:
            self.id2label = {int(k): str(v) for k, v in labels.items()}
        except (AttributeError, TypeError, ValueError):
            raise ArtifactError(f"{self.path / 'config.json'}: id2label must map class indices to names, got {labels!r}") from None

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the graph on encoded inputs; returns {output name: array}."""
        names = list(outputs) if outputs else self.output_names
        values = self.session.run(names, {k: v for k, v in feeds.items() if k in self.input_names})
        return dict(zip(names, values))

    def logits(self, examples: Sequence[TextExample], batch_size: int = 8) -> np.ndarray:
        out = [
            self.run(self.text_encoder(examples[i : i + batch_size]), ["logits"])["logits"]
            for i in range(0, len(examples), batch_size)
        ]
        return np.concatenate(out)

    def classify(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, batch_size: int = 8
    ) -> list[dict[str, float | str]]:
        """Label and softmax probability per text (or text pair)."""
        pairs = text_pairs if text_pairs is not None else [None] * len(texts)
        logits = self.logits([TextExample(t, p) for t, p in zip(texts, pairs)], batch_size)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        best = probs.argmax(-1)
        return [{"label": self.id2label.get(int(b), str(int(b))), "score": float(p[b])} for b, p in zip(best, probs)]


def original_positions(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Compose the graph's per-layer `kept_index_<l>` outputs into original token positions.

    Each layer's kept_index points into the sequence that entered it; the result maps every
    `kept_index_<l>` name to [B,K_l] positions in the input text (-1 = padding).
    """
    names = sorted((k for k in outputs if k.startswith("kept_index_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    result: dict[str, np.ndarray] = {}
    previous: np.ndarray | None = None
    for name in names:
        index = outputs[name]
        taken = index if previous is None else np.take_along_axis(previous, np.maximum(index, 0), axis=1)
        previous = np.where(index >= 0, taken, -1)
        result[name] = previous
    return result


def _short(error: BaseException, limit: int = 200) -> str:
    """The first line of an error, without onnxruntime's '[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : ' prefix."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^Load model from \S+ failed:", "", text).strip().rstrip(".")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_object(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} cannot be read ({_short(e)}): re-export the artifact (tokprune-export)") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} must hold a JSON object ({what}): re-export the artifact (tokprune-export)")
    return data


def _max_positions(config: dict) -> int:
    value = config.get("max_position_embeddings", 512)
    return value if type(value) is int and value > 0 else 512


def read_artifact(artifact: str | os.PathLike) -> tuple[dict, dict]:
    """(manifest, config.json) of an artifact directory after checking its files are there: model.onnx,
    tokprune.json, config.json, tokenizer.json. ArtifactError (one line) otherwise. Loads no model."""
    path = Path(artifact)
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "not found"
        raise ArtifactError(f"{path} {state}: pass an artifact directory written by tokprune-export")
    if not (path / MODEL_FILE).is_file():
        raise ArtifactError(f"{path} has no {MODEL_FILE}: pass a directory written by tokprune-export")
    if not (path / MANIFEST_FILE).is_file():
        raise ArtifactError(f"{path} has no {MANIFEST_FILE} (the manifest tokprune-export writes): pass a directory written by tokprune-export")
    manifest = _read_object(path / MANIFEST_FILE, "the export manifest")
    if not (path / "config.json").is_file():
        raise ArtifactError(f"{path} has no config.json: re-export it (tokprune-export)")
    config = _read_object(path / "config.json", "the model config")
    if not (path / "tokenizer.json").is_file():
        raise ArtifactError(f"{path} has no tokenizer.json: copy the checkpoint's tokenizer.json there, or re-export it")
    return manifest, config


def open_artifact(artifact: str | os.PathLike, threads: int | None = None, kernel_library: KernelChoice = None) -> PrunedSession:
    """Open an artifact directory written by `tokprune-export` (kernel choice: see PrunedSession)."""
    return PrunedSession(artifact, threads, kernel_library)
