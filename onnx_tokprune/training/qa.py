"""Extractive question answering: fine-tuning a span head and evaluating any span model on a QASplit."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from onnx_tokprune.data.squad import QASplit, training_windows
from onnx_tokprune.runtime.qa import QA_CONFIG_KEY, QAWindows, Span, spans, squad_scores
from onnx_tokprune.training.common import TrainSettings, run_trainer, save_checkpoint
from onnx_tokprune.training.resume import DEFAULT_SAVE_STEPS, MANIFEST, describe_file, open_run


@dataclass(frozen=True)
class QAData:
    train: QASplit | None
    validation: QASplit
    max_length: int
    stride: int

    def describe(self) -> str:
        return self.train.name if self.train is not None else self.validation.name


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor, end_positions: torch.Tensor) -> torch.Tensor:
    """Mean of the start and end cross-entropies (the span loss of BERT's SQuAD recipe)."""
    ce = torch.nn.functional.cross_entropy
    return (ce(start_logits, start_positions) + ce(end_logits, end_positions)) / 2


class SpanObjective(torch.nn.Module):
    """The span loss around an HF span model or a span PrunedEncoder, plus an optional extra term
    `extra(output, attention_mask)` (LTP's mask regulariser)."""

    def __init__(self, model: torch.nn.Module, extra=None) -> None:
        super().__init__()
        self.model = model
        self.extra = extra

    def forward(self, input_ids, attention_mask, token_type_ids=None, start_positions=None, end_positions=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        result = {"start_logits": out.start_logits, "end_logits": out.end_logits}
        if start_positions is not None:
            result["loss"] = span_loss(out.start_logits, out.end_logits, start_positions, end_positions)
            if self.extra is not None:
                result["loss"] = result["loss"] + self.extra(out, attention_mask)
        return result


class QATask:
    """What a pruning trainer needs of extractive QA (training.common.ClassificationTask's counterpart):
    training windows with start/end labels, the span loss, SQuAD exact match / F1 (0-100) on the
    validation questions, and the windows of 256 seeded training questions for calibration."""

    head = "span"

    def __init__(self, data: QAData, tokenizer, max_train_samples: int | None, seed: int) -> None:
        if data.train is None:
            raise ValueError("training needs the QA training split")
        self.data, self.tokenizer = data, tokenizer
        self.windows = QAWindows(tokenizer.backend_tokenizer, data.max_length, data.stride)
        self.train = training_windows(data.train.sample(max_train_samples, seed), self.windows).shuffle(seed=seed)

    def describe(self) -> str:
        return self.data.describe()

    def objective(self, model: torch.nn.Module, extra=None) -> torch.nn.Module:
        return SpanObjective(model, extra)

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        return evaluate_spans(predict_spans(torch_forward(model), self.data.validation, self.windows, progress=True), self.data.validation)

    def calibration_rows(self, seed: int, count: int = 256) -> list[tuple[list[int], list[int]]]:
        sample = self.data.train.sample(count, seed)
        return [(w.ids, w.type_ids) for w in self.windows.encode(sample.questions, sample.contexts)]

    def text_encoder(self):
        from onnx_tokprune.runtime.text_encoder import TextEncoder

        return TextEncoder(self.tokenizer.backend_tokenizer, self.data.max_length)


def load_qa_task(model_dir: str | os.PathLike, data: QAData, max_train_samples: int | None, seed: int):
    """(tokenizer, span model, QATask) of a fine-tuned QA checkpoint; seeds torch."""
    from onnx_tokprune.modeling import load_span_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_span_model(model_dir)
    task = QATask(data, tokenizer, max_train_samples, seed)
    torch.manual_seed(seed)
    return tokenizer, model, task


def predict_spans(
    forward: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]], split: QASplit, windows: QAWindows,
    batch_size: int = 32, progress: bool = False,
) -> list[Span]:
    """Best span per question; `forward(feeds)` gives (start, end) logits [B,S] of a padded batch."""
    from tqdm.auto import tqdm

    encoded = windows.encode(split.questions, split.contexts)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))  # little padding per batch
    starts: list[np.ndarray] = [np.empty(0)] * len(encoded)
    ends: list[np.ndarray] = [np.empty(0)] * len(encoded)
    for at in tqdm(range(0, len(order), batch_size), desc="QA windows", disable=not progress):
        rows = order[at : at + batch_size]
        start, end = forward(windows.pad([encoded[r] for r in rows]))
        for k, r in enumerate(rows):
            starts[r], ends[r] = start[k], end[k]
    return spans(encoded, starts, ends, split.contexts)


def torch_forward(model: torch.nn.Module) -> Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """`predict_spans`'s forward for an HF span model or a span PrunedEncoder."""

    def forward(feeds):
        tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
        with torch.no_grad():
            out = model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"], token_type_ids=tensors["token_type_ids"])
        return out.start_logits.float().numpy(), out.end_logits.float().numpy()

    return forward


def evaluate_spans(predicted: list[Span], split: QASplit) -> dict[str, float]:
    return squad_scores([s.text for s in predicted], split.answer_texts())


def finetune_qa(
    model_name: str | os.PathLike, data: QAData, output: str | os.PathLike, settings: TrainSettings,
    max_train_samples: int | None = None, force: bool = False, local: bool = True, save_steps: int = DEFAULT_SAVE_STEPS,
) -> dict[str, float]:
    """Fine-tune a span head (AutoModelForQuestionAnswering) on `data.train`; write the checkpoint and
    return exact match / F1 on `data.validation`. Resumable like training.finetune.finetune."""
    from onnx_tokprune.modeling import check_checkpoint, load_span_model, load_tokenizer

    check_checkpoint(model_name, "new", local=local, kinds=("span",))
    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(model_name, local=local)
    model = load_span_model(model_name, head="new", local=local)
    windows = QAWindows(tokenizer.backend_tokenizer, data.max_length, data.stride)
    train = data.train.head(max_train_samples)
    dataset = training_windows(train, windows).shuffle(seed=settings.seed)
    spec = {"command": "finetune-qa", "model": describe_file(model_name),
            "data": data.describe(), "train_file": describe_file(data.describe()),
            "max_length": data.max_length, "stride": data.stride,
            "settings": asdict(settings), "max_train_samples": max_train_samples}
    run = open_run(output, spec, save_steps, force)
    trainer = run_trainer(SpanObjective(model.train()), dataset, tokenizer, settings, stage=run.stage("train"))
    model.eval()
    metrics = evaluate_spans(predict_spans(torch_forward(model), data.validation, windows, progress=True), data.validation)
    model.config.update({QA_CONFIG_KEY: {"max_length": data.max_length, "stride": data.stride}})
    if trainer.is_world_process_zero():
        save_checkpoint(model, tokenizer, output, force=force, extra_files={MANIFEST: run.manifest(metrics)})
        run.finish()
    return metrics
