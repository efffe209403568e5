"""Baseline fine-tuning of a pretrained encoder on a GLUE task: the teacher and start for LTP/ToP."""

from __future__ import annotations

import os

import torch

from onnx_tokprune.data.metrics import compute_metrics
from onnx_tokprune.training.common import ClassifierObjective, TrainSettings, load_task_data, predict, run_trainer, save_checkpoint


def finetune(
    model_name: str,
    task: str,
    output: str | os.PathLike,
    settings: TrainSettings,
    data_dir: str | None = None,
    max_train_samples: int | None = None,
    max_length: int = 128,
    force: bool = False,
) -> dict[str, float]:
    """Fine-tune `model_name` (a checkpoint directory or hub name: a bare encoder, a pretraining or a
    classification checkpoint) on `task`, save it to `output`, return the full-dev metrics."""
    from onnx_tokprune.data.glue import get_task
    from onnx_tokprune.modeling import check_checkpoint, load_classifier, load_tokenizer

    spec = get_task(task)
    check_checkpoint(model_name, "new", local=False)
    tokenizer = load_tokenizer(model_name, local=False)
    torch.manual_seed(settings.seed)
    id2label = dict(enumerate(spec.label_names)) if spec.label_names and spec.num_labels > 1 else None
    model = load_classifier(model_name, "new", num_labels=spec.num_labels, id2label=id2label, local=False)
    spec, train, dev = load_task_data(task, tokenizer, data_dir, max_train_samples, max_length, settings.seed)
    trainer = run_trainer(ClassifierObjective(model, spec.num_labels), train, tokenizer, settings)
    metrics = compute_metrics(spec.name, predict(model, dev, tokenizer), dev["labels"])
    if trainer.is_world_process_zero():
        save_checkpoint(model, tokenizer, output, force=force)
    return metrics
