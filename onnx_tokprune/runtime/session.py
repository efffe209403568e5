"""Open an exported artifact in onnxruntime and classify text (no torch needed).

```python
from onnx_tokprune.runtime import open_artifact
session = open_artifact("out/minilm_sst2_cal50-onnx")
session.classify(["a charming and often affecting journey"])   # [{'label': ..., 'score': ...}]
qa = open_artifact("out/minilm_squad_cal-onnx")                   # a span (QA) artifact
qa.answer(["Who won?"], ["The Broncos won the game."])            # [{'answer': 'The Broncos', 'score': ..., 'start': 0, 'end': 11}]
```

The compiled TokenPrune kernel (`tokprune build-kernel`) is registered when it is found
($TOKPRUNE_KERNEL_LIBRARY, else the built library: `runtime.kernel.find_kernel`) or given; otherwise,
or with `kernel_library=False`, onnxruntime inlines the op's portable ONNX function carried in the
model. Both compute the same thing (tests/test_kernel.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from onnx_tokprune.artifact import HEADS, LOGITS_OUTPUT, MODEL_INPUTS, SPAN_OUTPUTS, Manifest, read_artifact
from onnx_tokprune.data.text import TextExample
from onnx_tokprune.errors import ArtifactError, InvalidTextError, first_line
from onnx_tokprune.runtime.cpus import available_cpus
from onnx_tokprune.runtime.kernel import KERNEL_ENV, find_kernel
from onnx_tokprune.runtime.text_encoder import TextEncoder, position_limit

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
        self.artifact = read_artifact(self.path)
        config = self.artifact.hf_config
        model_file = self.artifact.model_file
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
        self.head = self.manifest.export.head
        wanted = HEADS[self.head]
        if "input_ids" not in self.input_names or not set(self.input_names) <= set(MODEL_INPUTS) or not set(wanted) <= set(self.output_names):
            raise ArtifactError(
                f"{model_file} is not a tokprune graph: it takes {self.input_names} and gives {self.output_names}, "
                f"not {'/'.join(MODEL_INPUTS)} -> {', '.join(wanted)}: pass a directory written by tokprune-export"
            )
        try:
            tokenizer = Tokenizer.from_file(str(self.artifact.tokenizer_file))
        except Exception as e:  # the tokenizers library raises a bare Exception
            raise ArtifactError(f"{self.artifact.tokenizer_file} cannot be loaded ({_short(e)}): copy the checkpoint's tokenizer.json there") from None
        self.text_encoder = TextEncoder(tokenizer, position_limit(config))
        labels = config.get("id2label", {})
        try:
            self.id2label = {int(k): str(v) for k, v in labels.items()}
        except (AttributeError, TypeError, ValueError):
            raise ArtifactError(f"{self.path / 'config.json'}: id2label must map class indices to names, got {labels!r}") from None

    @property
    def manifest(self) -> Manifest:
        return self.artifact.manifest

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the graph on encoded inputs; returns {output name: array}."""
        names = list(outputs) if outputs else self.output_names
        values = self.session.run(names, {k: v for k, v in feeds.items() if k in self.input_names})
        return dict(zip(names, values))

    def logits(self, examples: Sequence[TextExample], batch_size: int = 8) -> np.ndarray:
        self._need("sequence", "classify text")
        out = [
            self.run(self.text_encoder(examples[i : i + batch_size]), [LOGITS_OUTPUT])[LOGITS_OUTPUT]
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

    def _need(self, head: str, what: str) -> None:
        if self.head != head:
            use = "answer(questions, contexts)" if self.head == "span" else "classify(texts)"
            raise ArtifactError(f"{self.path} is a {self.head} model and cannot {what}: use {use}")

    def span_logits(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) logits [B,S] of a padded batch (a span artifact)."""
        self._need("span", "give span logits")
        out = self.run(feeds, list(SPAN_OUTPUTS))
        return out[SPAN_OUTPUTS[0]], out[SPAN_OUTPUTS[1]]

    def windows(self, max_length: int | None = None, stride: int | None = None):
        """The QA windowing (runtime.qa.QAWindows) with this artifact's tokenizer and recorded window."""
        from onnx_tokprune.runtime.qa import QAWindows, window_settings

        self._need("span", "answer questions")
        tokenizer = Tokenizer.from_file(str(self.artifact.tokenizer_file))
        return QAWindows(tokenizer, *window_settings(self.artifact.hf_config, max_length, stride))

    def answer(self, questions: Sequence[str], contexts: Sequence[str], batch_size: int = 8) -> list[dict[str, float | str | int]]:
        """The best answer span per (question, context): its text, score (start + end logit) and
        character offsets in the context; long contexts are read in overlapping windows."""
        from onnx_tokprune.runtime.qa import spans

        if len(questions) != len(contexts):
            raise InvalidTextError(f"{len(questions)} question(s) but {len(contexts)} context(s): pass one context per question")
        windows = self.windows()
        encoded = windows.encode(questions, contexts)
        starts, ends = [], []
        for at in range(0, len(encoded), batch_size):
            start, end = self.span_logits(windows.pad(encoded[at : at + batch_size]))
            starts.extend(start)
            ends.extend(end)
        return [
            {"answer": s.text, "score": s.score, "start": s.start_char, "end": s.end_char}
            for s in spans(encoded, starts, ends, contexts)
        ]


def _short(error: BaseException, limit: int = 200) -> str:
    """The first line of an error, without onnxruntime's '[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : ' prefix."""
    text = first_line(error, limit=10_000)
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^Load model from \S+ failed:", "", text).strip().rstrip(".")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def open_artifact(artifact: str | os.PathLike, threads: int | None = None, kernel_library: KernelChoice = None) -> PrunedSession:
    """Open an artifact directory written by `tokprune-export` (kernel choice: see PrunedSession)."""
    return PrunedSession(artifact, threads, kernel_library)
