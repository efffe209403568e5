"""Task metric, kept tokens and FLOPs of a pruned model: PyTorch drop mode, mask mode, ONNX artifact.

Every model is run at batch 1 on the whole evaluation split (a data.source.Split: a GLUE dev set,
a file, a hub split), its labels read through the model's own label names, tokenized with the checkpoint's own
tokenizer.json (no truncation), so FLOPs are per sentence without padding:
- analytic FLOPs: `flops.EncoderShape` from the tokens each layer kept;
- counted FLOPs (drop mode): `torch.utils.flop_counter.FlopCounterMode` over the actual run.
The two must agree; relative FLOPs = pruned / unpruned analytic FLOPs on the same sentences.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from onnx_tokprune.artifact import LOGITS_OUTPUT, kept_counts
from onnx_tokprune.data.metrics import compute_metrics, main_metric
from onnx_tokprune.data.source import LabelScheme, Split, encode_labels, metric_scheme
from onnx_tokprune.errors import DataError
from onnx_tokprune.flops import EncoderShape
from onnx_tokprune.runtime.session import KernelChoice, PrunedSession
from onnx_tokprune.runtime.text_encoder import TextEncoder


@dataclass
class EvalResult:
    task: str
    source: str
    examples: int
    metrics: dict[str, float]
    main_metric: str
    mean_tokens: float
    kept_tokens: dict[str, float] = field(default_factory=dict)
    analytic_gflops: float = 0.0
    counted_gflops: float | None = None
    relative_flops: float = 1.0
    max_tokens: int | None = None
    """Inputs cut to this many tokens (the truncation baseline); relative FLOPs are then against the
    unpruned model on the whole inputs."""
    predictions: list[int] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("predictions")
        return data


def _labels(split: Split, config) -> tuple[LabelScheme, np.ndarray]:
    """(the scheme metrics are computed with, the split's labels as the model's ids or scores)."""
    scheme = LabelScheme.from_config(config)
    return metric_scheme(split, scheme), encode_labels(split, scheme)


def _result(name, scheme, metric, source, logits, labels, lengths, kept, shape, counted=None, full=None, max_tokens=None) -> EvalResult:
    """`full`: the whole inputs' lengths where `lengths` were cut (relative FLOPs are against them)."""
    analytic = [shape.flops(n, k) for n, k in zip(lengths, kept)]
    unpruned = sum(dataclasses.replace(shape, cls_only_last=False).flops(n) for n in (full or lengths))
    layers = sorted({layer for k in kept for layer in k})
    return EvalResult(
        task=name,
        source=source,
        examples=len(lengths),
        metrics=compute_metrics(scheme, logits, labels, metric),
        main_metric=main_metric(scheme, metric),
        mean_tokens=float(np.mean(lengths)),
        kept_tokens={str(layer): float(np.mean([k[layer] for k in kept])) for layer in layers},
        analytic_gflops=sum(analytic) / len(lengths) / 1e9,
        counted_gflops=None if counted is None else counted / len(lengths) / 1e9,
        relative_flops=sum(analytic) / unpruned,
        max_tokens=max_tokens,
        predictions=np.asarray(logits).argmax(-1).tolist() if np.asarray(logits).shape[-1] > 1 else [],
    )


def evaluate_checkpoint(
    model_dir: str | os.PathLike, split: Split | Callable[[], Split], modes=("drop", "mask"), metric: str | None = None,
    progress: bool = True, cls_only: bool = False, max_tokens: int | None = None, protect_second: bool = False,
) -> list[EvalResult]:
    """Evaluate a checkpoint dir (with or without tokprune.json) on `split` in the given PyTorch modes;
    `metric` overrides the main metric. `split` may be a function that loads it: it is then called
    after the model is loaded, so a broken checkpoint is reported before a data problem. `cls_only`:
    the CLS-only last layer (PrunedEncoder), counted in the FLOPs too. `max_tokens`: every input cut to
    that many tokens (TextEncoder.token_ids), relative FLOPs against the whole inputs. `protect_second`:
    every decision keeps the second text of each pair (PrunedEncoder `protected`, PyTorch only), to
    measure what pruning it costs (an NLI hypothesis, say); not with `max_tokens`."""
    from torch.utils.flop_counter import FlopCounterMode

    from onnx_tokprune.modeling import load_pruned, wrap

    encoder = load_pruned(model_dir, "drop", require_config=False)
    if cls_only:
        from onnx_tokprune.errors import CheckpointError

        if encoder.cls_only_refusal():
            raise CheckpointError(f"{model_dir}: the CLS-only last layer does not apply: {encoder.cls_only_refusal()}")
        encoder.cls_only = True
    text_encoder = TextEncoder.from_dir(model_dir)
    split = split() if callable(split) else split
    scheme, labels = _labels(split, encoder.model.config)
    rows = text_encoder.token_ids(split.examples, max_tokens)
    full = [len(r[0]) for r in text_encoder.token_ids(split.examples)] if max_tokens is not None else None
    if protect_second and max_tokens is not None:
        raise ValueError("protect_second applies to whole inputs, not with max_tokens")
    if protect_second and not any(e.text_pair is not None for e in split.examples):
        raise DataError(f"{split.name} has no second texts to keep: protecting the second text applies to pair data")
    second = [[s == 1 for s in text_encoder.sequence_ids(e)] for e in split.examples] if protect_second else None
    shape = EncoderShape.from_hf(encoder.model.config, cls_only)
    results = []
    for mode in modes if encoder.config is not None else ("drop",):
        model = encoder if mode == "drop" else wrap(encoder.model, encoder.config, mode, cls_only=cls_only)
        logits, kept, lengths = [], [], []
        counter = FlopCounterMode(display=False) if mode == "drop" else None
        with torch.no_grad(), counter if counter is not None else nullcontext():
            for i, row in enumerate(tqdm(rows, desc=f"eval {split.name} pytorch-{mode}", disable=not progress)):
                feeds = {k: torch.from_numpy(v) for k, v in TextEncoder.pad([row]).items()}
                protected = torch.tensor([second[i]]) if second is not None else None
                out = model(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"], protected=protected)
                logits.append(out.logits.numpy()[0])
                lengths.append(len(row[0]))
                counts = [int(k.sum()) for k in out.kept]
                kept.append(dict(zip(model.pruning_layers, counts)))
        counted = counter.get_total_flops() if counter is not None else None
        source = f"pytorch-{mode}" + (" second text kept" if protect_second else "")
        results.append(_result(split.name, scheme, metric, source, np.stack(logits), labels, lengths, kept, shape, counted, full, max_tokens))
    return results


def evaluate_artifact(
    artifact: str | os.PathLike | PrunedSession, split: Split, metric: str | None = None, progress: bool = True,
    kernel_library: KernelChoice = None, max_tokens: int | None = None,
) -> EvalResult:
    """Evaluate an ONNX artifact (a directory, or a session already open) on `split` in onnxruntime
    (batch 1, kept tokens from its kept_index outputs); `kernel_library` as in PrunedSession, for a
    directory; `max_tokens` as in `evaluate_checkpoint`."""
    session = artifact if isinstance(artifact, PrunedSession) else PrunedSession(artifact, kernel_library=kernel_library)
    scheme, labels = _labels(split, session.artifact.hf_config)
    rows = session.text_encoder.token_ids(split.examples, max_tokens)
    full = [len(r[0]) for r in session.text_encoder.token_ids(split.examples)] if max_tokens is not None else None
    shape = EncoderShape.from_hf(session.artifact.hf_config, session.manifest.export.cls_only_last)
    logits, kept, lengths = [], [], []
    for row in tqdm(rows, desc=f"eval {split.name} onnxruntime", disable=not progress):
        out = session.run(session.text_encoder.pad([row]))
        logits.append(out[LOGITS_OUTPUT][0])
        lengths.append(len(row[0]))
        kept.append(kept_counts(out))
    return _result(split.name, scheme, metric, "onnxruntime", np.stack(logits), labels, lengths, kept, shape, full=full, max_tokens=max_tokens)


def eval_table(results: list[EvalResult]) -> str:
    """Markdown table for people."""
    lines = [
        "| source | data | examples | metric | mean tokens | kept tokens per pruning layer | GFLOPs (analytic) | GFLOPs (counted) | relative FLOPs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        kept = ", ".join(f"L{k}: {v:.1f}" for k, v in r.kept_tokens.items()) or "—"
        counted = "—" if r.counted_gflops is None else f"{r.counted_gflops:.4f}"
        metric = f"{r.main_metric} {100 * r.metrics[r.main_metric]:.2f}"
        lines.append(
            f"| {r.source} | {r.task} | {r.examples} | {metric} | {r.mean_tokens:.1f} | {kept} | {r.analytic_gflops:.4f} | {counted} | {r.relative_flops:.3f} |"
        )
    return "\n".join(lines)


@dataclass
class QAEvalResult:
    """SQuAD exact match / F1 of one model on a QA split, with kept tokens and FLOPs per window."""

    data: str
    source: str
    questions: int
    windows: int
    exact_match: float
    f1: float
    mean_tokens: float
    kept_tokens: dict[str, float] = field(default_factory=dict)
    analytic_gflops: float = 0.0
    counted_gflops: float | None = None
    relative_flops: float = 1.0
    answers: list[tuple[int, int]] = field(default_factory=list, repr=False)
    """Per question, the predicted span's character offsets in its context."""

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("answers")
        return data


def evaluate_qa(
    run: Callable[..., tuple[np.ndarray, np.ndarray, dict[int, float]]], source: str, split, windows,
    shape: EncoderShape, progress: bool = True, counter=None,
) -> QAEvalResult:
    """Run every window of `split` (data.squad.QASplit) alone (batch 1, no padding) through
    `run(feeds, window)` -> (start [1,S], end [1,S], tokens kept per pruning layer) and score the best
    spans (runtime.qa)."""
    from onnx_tokprune.runtime.qa import spans, squad_scores

    encoded = windows.encode(split.questions, split.contexts)
    starts, ends, kept, lengths = [], [], [], []
    with counter if counter is not None else nullcontext():
        for window in tqdm(encoded, desc=f"eval QA {source}", disable=not progress):
            start, end, counts = run(windows.pad([window]), window)
            starts.append(start[0])
            ends.append(end[0])
            kept.append(counts)
            lengths.append(len(window.ids))
    best = spans(encoded, starts, ends, split.contexts)
    scores = squad_scores([s.text for s in best], split.answer_texts())
    analytic = [shape.flops(n, k) for n, k in zip(lengths, kept)]
    layers = sorted({layer for k in kept for layer in k})
    return QAEvalResult(
        data=split.name, source=source, questions=len(split), windows=len(encoded),
        exact_match=scores["exact_match"], f1=scores["f1"], mean_tokens=float(np.mean(lengths)),
        kept_tokens={str(layer): float(np.mean([k[layer] for k in kept])) for layer in layers},
        analytic_gflops=sum(analytic) / len(lengths) / 1e9,
        counted_gflops=None if counter is None else counter.get_total_flops() / len(lengths) / 1e9,
        relative_flops=sum(analytic) / sum(shape.flops(n) for n in lengths),
        answers=[(s.start_char, s.end_char) for s in best],
    )


def evaluate_qa_checkpoint(
    model_dir: str | os.PathLike, split, windows=None, modes=("drop", "mask"), progress: bool = True, protect_question: bool = False,
) -> list[QAEvalResult]:
    """A span checkpoint (with or without tokprune.json) in the given PyTorch modes; `split` may be a
    function that loads it (called after the model loads). `windows`: runtime.qa.QAWindows, by default
    the checkpoint's recorded window. `protect_question`: every decision keeps the question's tokens
    (and CLS, SEP: all but the context; PrunedEncoder `protected`, PyTorch only)."""
    from torch.utils.flop_counter import FlopCounterMode

    from onnx_tokprune.modeling import load_pruned, wrap

    encoder = load_pruned(model_dir, "drop", require_config=False, kinds=("span",))
    if windows is None:
        from tokenizers import Tokenizer

        from onnx_tokprune.runtime.qa import QAWindows, window_settings

        windows = QAWindows(Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json")), *window_settings(encoder.model.config.to_dict()))
    split = split() if callable(split) else split
    shape = EncoderShape.from_hf(encoder.model.config)
    results = []
    for mode in modes if encoder.config is not None else ("drop",):
        model = encoder if mode == "drop" else wrap(encoder.model, encoder.config, mode)

        def run(feeds, window, model=model):
            tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
            protected = torch.tensor([[not inside for inside in window.in_context]]) if protect_question else None
            with torch.no_grad():
                out = model(tensors["input_ids"], tensors["attention_mask"], tensors["token_type_ids"], protected=protected)
            counts = {layer: float(k.sum()) for layer, k in zip(model.pruning_layers, out.kept)}
            return out.start_logits.numpy(), out.end_logits.numpy(), counts

        counter = FlopCounterMode(display=False) if mode == "drop" else None
        source = f"pytorch-{mode}" + (" question kept" if protect_question else "")
        results.append(evaluate_qa(run, source, split, windows, shape, progress, counter))
    return results


def evaluate_qa_artifact(session: PrunedSession, split, windows=None, progress: bool = True) -> QAEvalResult:
    """A span artifact in onnxruntime (batch 1 per window; kept tokens from its kept_index outputs)."""
    windows = windows or session.windows()

    def run(feeds, window):
        out = session.run(feeds)
        return out["start_logits"], out["end_logits"], kept_counts(out)

    return evaluate_qa(run, "onnxruntime", split, windows, EncoderShape.from_hf(session.artifact.hf_config), progress)


def qa_table(results: list[QAEvalResult]) -> str:
    """Markdown table for people."""
    lines = [
        "| source | data | questions | windows | exact match | F1 | mean tokens | kept tokens per pruning layer | GFLOPs (analytic) | GFLOPs (counted) | relative FLOPs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        kept = ", ".join(f"L{k}: {v:.1f}" for k, v in r.kept_tokens.items()) or "—"
        counted = "—" if r.counted_gflops is None else f"{r.counted_gflops:.4f}"
        lines.append(
            f"| {r.source} | {r.data} | {r.questions} | {r.windows} | {r.exact_match:.2f} | {r.f1:.2f} | {r.mean_tokens:.1f} | {kept} "
            f"| {r.analytic_gflops:.4f} | {counted} | {r.relative_flops:.3f} |"
        )
    return "\n".join(lines)
