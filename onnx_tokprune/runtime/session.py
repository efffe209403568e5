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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnx_tokprune.data.text import TextExample
from onnx_tokprune.runtime.kernel import KERNEL_ENV, find_kernel
from onnx_tokprune.runtime.text_encoder import TextEncoder

MODEL_FILE = "model.onnx"
KernelChoice = str | os.PathLike | bool | None


class ArtifactError(ValueError):
    """An artifact directory that cannot be opened; the message says what to do."""


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
        """`kernel_library`: None finds the compiled kernel (`find_kernel`), False uses the portable
        function, a path registers that library."""
        self.path = Path(artifact)
        model_file = self.path / MODEL_FILE
        if not model_file.is_file():
            raise ArtifactError(f"{self.path} has no {MODEL_FILE}: pass a directory written by tokprune-export")
        if kernel_library is None:
            kernel_library = find_kernel()
        kernel_library = kernel_library or None
        if kernel_library is not None and not Path(kernel_library).is_file():
            raise ArtifactError(f"TokenPrune kernel library {kernel_library} not found: build it with `tokprune build-kernel` or unset ${KERNEL_ENV}")
        self.kernel_library = kernel_library
        self.session = ort.InferenceSession(
            str(model_file), session_options(threads, kernel_library, spinning), providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.text_encoder = TextEncoder.from_dir(self.path)
        config = json.loads((self.path / "config.json").read_text())
        self.id2label = {int(k): v for k, v in config.get("id2label", {}).items()}

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


def open_artifact(artifact: str | os.PathLike, threads: int | None = None, kernel_library: KernelChoice = None) -> PrunedSession:
    """Open an artifact directory written by `tokprune-export` (kernel choice: see PrunedSession)."""
    return PrunedSession(artifact, threads, kernel_library)
