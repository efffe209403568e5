"""Extractive question answering: fine-tuning a span head and evaluating any span model on a QASplit."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from onnx_tokprune.data.squad import QASplit, training_windows
from onnx_tokprune.runtime.qa import QA_CONFIG_KEY, QAWindows, Span, spans, squad_scores
from onnx_tokprune.training.common import TrainSettings, run_trainer, save_checkpoint


@dataclass(frozen=True)
class QAData:
    train: QASplit | None
    validation: QASplit
    max_length: int
    stride: int


class SpanObjective(torch.nn.Module):
    """Mean of the start and end cross-entropies (the span loss of BERT's SQuAD recipe)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None, start_positions=None, end_positions=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        result = {"start_logits": out.start_logits, "end_logits": out.end_logits}
        if start_positions is not None:
            ce = torch.nn.functional.cross_entropy
            result["loss"] = (ce(out.start_logits, start_positions) + ce(out.end_logits, end_positions)) / 2
        return result


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
    max_train_samples: int | None = None, force: bool = False, local: bool = True,
) -> dict[str, float]:
    """Fine-tune a span head (AutoModelForQuestionAnswering) on `data.train`; write the checkpoint and
    return exact match / F1 on `data.validation`."""
    from onnx_tokprune.modeling import check_checkpoint, load_span_model, load_tokenizer

    check_checkpoint(model_name, "new", local=local, kinds=("span",))
    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(model_name, local=local)
    model = load_span_model(model_name, head="new", local=local)
    windows = QAWindows(tokenizer.backend_tokenizer, data.max_length, data.stride)
    train = data.train.head(max_train_samples)
    dataset = training_windows(train, windows).shuffle(seed=settings.seed)
    trainer = run_trainer(SpanObjective(model.train()), dataset, tokenizer, settings)
    model.eval()
    metrics = evaluate_spans(predict_spans(torch_forward(model), data.validation, windows, progress=True), data.validation)
    model.config.update({QA_CONFIG_KEY: {"max_length": data.max_length, "stride": data.stride}})
    if trainer.is_world_process_zero():
        save_checkpoint(model, tokenizer, output, force=force)
    return metrics
