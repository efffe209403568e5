"""Baseline fine-tuning of a pretrained encoder on any labelled data: the teacher and start for LTP/ToP."""

from __future__ import annotations

import os
from dataclasses import asdict

import torch

from onnx_tokprune.training.common import (
    ClassifierObjective,
    TrainingInput,
    TrainSettings,
    load_training_data,
    predict,
    run_trainer,
    save_checkpoint,
)
from onnx_tokprune.training.resume import DEFAULT_SAVE_STEPS, MANIFEST, describe_file, open_run


def finetune(
    model_name: str,
    data: TrainingInput,
    output: str | os.PathLike,
    settings: TrainSettings,
    max_train_samples: int | None = None,
    max_length: int = 128,
    force: bool = False,
    num_layers: int | None = None,
    save_steps: int = DEFAULT_SAVE_STEPS,
) -> dict[str, float]:
    """Fine-tune `model_name` (a checkpoint directory or hub name: a bare encoder, a pretraining or a
    classification checkpoint) on `data`, save it to `output` with the label names as its
    id2label/label2id, return the validation metrics. `num_layers`: fine-tune only the first N encoder
    layers (the "fewer layers" baseline of the frontier). Resumable (training.resume): every
    `save_steps` steps a checkpoint goes to `output`.resume; rerunning the same call continues there."""
    from onnx_tokprune.modeling import check_checkpoint, load_classifier, load_tokenizer

    check_checkpoint(model_name, "new", local=False)
    spec = {"command": "finetune", "model": describe_file(model_name),
            "data": data.describe(), "train_file": describe_file(data.train_file), "settings": asdict(settings),
            "max_train_samples": max_train_samples, "max_length": max_length, "num_layers": num_layers}
    run = open_run(output, spec, save_steps, force)
    tokenizer = load_tokenizer(model_name, local=False)
    torch.manual_seed(settings.seed)
    model = load_classifier(model_name, "new", local=False, num_layers=num_layers)  # a broken checkpoint fails before the data is read
    loaded = load_training_data(data, tokenizer, max_train_samples, max_length, settings.seed)
    scheme = loaded.scheme
    if model.config.num_labels != scheme.num_labels or model.config.id2label != (scheme.id2label() or model.config.id2label):
        torch.manual_seed(settings.seed)  # the new head starts as it would from a single load
        model = load_classifier(
            model_name, "new", num_labels=scheme.num_labels, id2label=scheme.id2label(), local=False, num_layers=num_layers
        )
    model.config.problem_type = "regression" if scheme.problem == "regression" else "single_label_classification"
    trainer = run_trainer(ClassifierObjective(model, scheme.num_labels), loaded.train, tokenizer, settings, stage=run.stage("train"))
    metrics = loaded.metrics(predict(model, loaded.validation, tokenizer), data.metric)
    if trainer.is_world_process_zero():
        save_checkpoint(model, tokenizer, output, force=force, extra_files={MANIFEST: run.manifest(metrics)})
        run.finish()
    return metrics
