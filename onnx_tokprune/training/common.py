"""What every training method shares: data, the loss wrapper, the HF Trainer run, checkpoint writing."""

from __future__ import annotations

import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from onnx_tokprune.config import PruneConfig, check_protect, protected_counts
from onnx_tokprune.data.glue import tokenize_split
from onnx_tokprune.data.metrics import compute_metrics
from onnx_tokprune.data.source import DataSource, LabelScheme, Split, encode_labels, load_split, metric_scheme, to_dataset
from onnx_tokprune.errors import DataError, TrainingError
from onnx_tokprune.io import atomic_output_dir


@dataclass
class TrainSettings:
    """Hyperparameters of one Trainer run."""

    epochs: float = 3.0
    learning_rate: float = 2e-5
    batch_size: int = 32
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    seed: int = 42
    logging_steps: int = 50
    group_by_length: bool = False

    def check(self) -> None:
        if self.epochs <= 0 or self.learning_rate <= 0 or self.batch_size < 1:
            raise TrainingError("epochs, learning rate and batch size must be positive")


class ClassifierObjective(nn.Module):
    """Task loss (cross-entropy, or MSE for regression) plus an optional extra term.

    `model` maps (input_ids, attention_mask, token_type_ids) to an object with `.logits`;
    `extra(output, attention_mask)` adds e.g. LTP's mask regulariser.
    """

    def __init__(self, model: nn.Module, num_labels: int, extra=None) -> None:
        super().__init__()
        self.model = model
        self.num_labels = num_labels
        self.extra = extra

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        logits = out.logits
        result: dict[str, Any] = {"logits": logits}
        if labels is not None:
            if self.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits, labels.long())
            if self.extra is not None:
                loss = loss + self.extra(out, attention_mask)
            result["loss"] = loss
        return result


@dataclass(frozen=True)
class TrainingInput:
    """The data of a training run: a DataSource plus its training and validation files (or the
    source's task / hub dataset splits), the problem type (finetune) and the reported main metric."""

    source: DataSource
    train_file: str | None = None
    validation_file: str | None = None
    problem_type: str | None = None
    metric: str | None = None

    def describe(self) -> str:
        return self.source.describe(self.train_file, "train")


def check_protect_data(protect: str | None, model, task, seed: int) -> None:
    """Before training with PruneConfig.protect: ConfigError when the model has no token types to find
    the second text by, TrainingError when the training inputs hold no second text."""
    check_protect(protect, getattr(model.config, "type_vocab_size", 1))
    if protect is not None and not any(protected_counts(protect, task.calibration_rows(seed))):
        raise TrainingError(f"protect {protect!r} but the training inputs have no second text (token type 1): train on pair data")


@dataclass
class TrainingData:
    """Tokenized training and validation sets, encoded with the label scheme of the model trained."""

    scheme: LabelScheme
    train: Any
    validation: Any
    train_split: Split
    validation_split: Split

    def metrics(self, predictions, metric: str | None = None) -> dict[str, float]:
        """The validation metrics (a GLUE task's own where the data is one: data.source.metric_scheme)."""
        return compute_metrics(metric_scheme(self.validation_split, self.scheme), predictions, self.validation["labels"], metric)


def load_training_data(
    data: TrainingInput, tokenizer, max_train_samples: int | None, max_length: int, seed: int, scheme: LabelScheme | None = None
) -> TrainingData:
    """The training split (a seeded subset with `max_train_samples`) and the full validation split,
    tokenized; labels encoded with `scheme` (a trained model's), or with the scheme the training
    labels define (LabelScheme.from_labels / the GLUE task's) when None (fine-tuning)."""
    train = load_split(data.source, data.train_file, "train", need_labels=True, limit=max_train_samples, seed=seed)
    if data.validation_file is None and data.source.task is None and data.source.dataset is None:
        raise DataError("training needs a validation set too: pass --validation-file")
    validation = load_split(data.source, data.validation_file, "validation", need_labels=True)
    if scheme is None:
        scheme = LabelScheme.from_task(train.task) if train.task else LabelScheme.from_labels(train.labels, data.problem_type, train.name)
    tokenized = [tokenize_split(to_dataset(split, encode_labels(split, scheme), scheme), tokenizer, max_length) for split in (train, validation)]
    return TrainingData(scheme, *tokenized, train, validation)


class ClassificationTask:
    """What a pruning trainer needs of a sequence-classification task (training.qa.QATask is the span
    counterpart): the tokenized training set, the loss around a model, the dev metrics of a model, and
    256 seeded training inputs for calibration and threshold checks."""

    head = "sequence"

    def __init__(self, data: TrainingInput, tokenizer, loaded: TrainingData, position_limit: int) -> None:
        self.data, self.tokenizer, self.loaded, self.position_limit = data, tokenizer, loaded, position_limit
        self.train = loaded.train

    def describe(self) -> str:
        return self.data.describe()

    def objective(self, model: nn.Module, extra=None) -> nn.Module:
        return ClassifierObjective(model, self.loaded.scheme.num_labels, extra)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Dev metrics (fractions) of `model` (a PrunedEncoder in drop mode), one sentence at a time."""
        return self.loaded.metrics(predict(model, self.loaded.validation, self.tokenizer, batch_size=1), self.data.metric)

    def calibration_rows(self, seed: int, count: int = 256) -> list[tuple[list[int], list[int]]]:
        split = load_split(self.data.source, self.data.train_file, "train", need_labels=True, limit=count, seed=seed)
        return self.text_encoder().token_ids(split.examples)

    def text_encoder(self):
        from onnx_tokprune.runtime.text_encoder import TextEncoder

        return TextEncoder(self.tokenizer.backend_tokenizer, self.position_limit)


def load_task(model_dir: str, data, max_train_samples: int | None, max_length: int, seed: int):
    """(tokenizer, model, task) of a fine-tuned checkpoint and the data to train it further on: a
    ClassificationTask for a TrainingInput, a training.qa.QATask for QA data (training.qa.QAData)."""
    from onnx_tokprune.training.qa import QAData, load_qa_task

    if isinstance(data, QAData):
        return load_qa_task(model_dir, data, max_train_samples, seed)
    tokenizer, model, loaded = load_finetuned(model_dir, data, max_train_samples, max_length, seed)
    return tokenizer, model, ClassificationTask(data, tokenizer, loaded, model.config.max_position_embeddings)


def load_finetuned(model_dir: str, data: TrainingInput, max_train_samples: int | None, max_length: int, seed: int):
    """(tokenizer, model, TrainingData) of a fine-tuned checkpoint and the data to train it further
    on (labels the model does not know are a DataError); seeds torch."""
    from onnx_tokprune.modeling import load_classifier, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_classifier(model_dir)
    scheme = LabelScheme.from_config(model.config)
    if data.problem_type is not None and data.problem_type != scheme.problem:
        raise TrainingError(f"{model_dir} is a {scheme.problem} model, not {data.problem_type}: leave out --problem-type")
    loaded = load_training_data(data, tokenizer, max_train_samples, max_length, seed, scheme)
    torch.manual_seed(seed)
    return tokenizer, model, loaded


def run_trainer(
    objective: nn.Module,
    train_dataset,
    tokenizer,
    settings: TrainSettings,
    extra_param_groups: list[dict] | None = None,
    frozen: tuple[nn.Parameter, ...] = (),
    constant_extra_lr: bool = False,
    callbacks: tuple = (),
    stage=None,
):
    """Train `objective` with the HF Trainer (progress bar, CPU or GPU, torchrun-ready); returns it.

    The model weights follow a linear warm-up/decay schedule; `extra_param_groups` follow it too,
    or keep their learning rate with `constant_extra_lr` (ToP's gate and Lagrangian optimisers).
    `stage` (training.resume.Stage): checkpoint there every `save_steps` steps and resume from the
    latest checkpoint found there; None: no checkpoints.
    """
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    settings.check()
    grouped = {id(p) for g in extra_param_groups or () for p in g["params"]} | {id(p) for p in frozen}
    weights = [p for p in objective.parameters() if p.requires_grad and id(p) not in grouped]
    groups = [{"params": weights, "lr": settings.learning_rate, "weight_decay": settings.weight_decay}]
    groups += extra_param_groups or []
    optimizer = torch.optim.AdamW(groups, lr=settings.learning_rate)
    scheduler = None
    if constant_extra_lr and extra_param_groups:
        total = max(1, math.ceil(math.ceil(len(train_dataset) / settings.batch_size) * settings.epochs))
        warm = settings.warmup_ratio * total

        def linear(step: int) -> float:
            return step / max(1.0, warm) if step < warm else max(0.0, (total - step) / max(1.0, total - warm))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [linear] + [lambda _: 1.0] * len(extra_param_groups))
    with tempfile.TemporaryDirectory(prefix="tokprune-trainer-") as scratch:
        saving = {"save_strategy": "no"}
        if stage is not None:
            saving = {"save_strategy": "steps", "save_steps": stage.save_steps, "save_total_limit": 1}
        args = TrainingArguments(
            output_dir=str(stage.directory) if stage is not None else scratch,
            num_train_epochs=settings.epochs,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            **_warmup(TrainingArguments, settings.warmup_ratio),
            weight_decay=settings.weight_decay,
            seed=settings.seed,
            logging_steps=settings.logging_steps,
            **_sampling(TrainingArguments, settings.group_by_length),
            **saving,
            eval_strategy="no",
            report_to="none",
            remove_unused_columns=True,
        )
        trainer = Trainer(
            model=objective,
            args=args,
            train_dataset=train_dataset,
            data_collator=DataCollatorWithPadding(tokenizer),
            optimizers=(optimizer, scheduler),
            callbacks=list(callbacks),
        )
        checkpoint = stage.latest_checkpoint() if stage is not None else None
        if checkpoint is not None and trainer.is_world_process_zero():
            print(f"resuming from {checkpoint}", file=sys.stderr)
        trainer.train(resume_from_checkpoint=checkpoint)
        return trainer


def _warmup(arguments_class, ratio: float) -> dict[str, float]:
    """transformers 4.x takes `warmup_ratio`; 5.x takes a float < 1 in `warmup_steps` as the ratio."""
    import inspect

    if "warmup_ratio" in inspect.signature(arguments_class.__init__).parameters:
        return {"warmup_ratio": ratio}
    return {"warmup_steps": ratio}


def _sampling(arguments_class, group_by_length: bool) -> dict[str, Any]:
    """Batches of similar lengths (less padding: on RTE's long-tailed pairs a random batch is 2.3x
    its mean length) or random ones: transformers 5.x names it `train_sampling_strategy`, 4.x `group_by_length`."""
    import inspect

    if "train_sampling_strategy" in inspect.signature(arguments_class.__init__).parameters:
        return {"train_sampling_strategy": "group_by_length" if group_by_length else "random"}
    return {"group_by_length": group_by_length}


def predict(model: nn.Module, dataset, tokenizer, batch_size: int = 64) -> np.ndarray:
    """Logits of `model` (HF classifier or PrunedEncoder) on a tokenized dataset, in order."""
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collate([{c: dataset[i][c] for c in columns} for i in range(start, min(start + batch_size, len(dataset)))])
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            out.append(logits.float().cpu().numpy())
    return np.concatenate(out)


def save_checkpoint(
    model, tokenizer, output: str | os.PathLike, config: PruneConfig | None = None, force: bool = False,
    extra_files: dict[str, Any] | None = None,
) -> Path:
    """HF files (+ tokprune.json, + `extra_files`: {file name: JSON data}) into `output`, atomically."""
    from onnx_tokprune.io import write_json_atomic

    with atomic_output_dir(output, force) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if config is not None:
            config.save(tmp)
        for name, data in (extra_files or {}).items():
            write_json_atomic(tmp / name, data)
    return Path(output)
