"""Metrics computed locally with scikit-learn and scipy (`evaluate` would fetch scripts from the hub),
chosen from the task type unless the caller names one.

- a GLUE task: its own (CoLA Matthews correlation; MRPC/QQP F1 and accuracy; STS-B Pearson and
  Spearman; accuracy otherwise);
- binary classification: F1 of the second class (id 1) and accuracy;
- more classes: accuracy and macro-averaged F1;
- regression: Pearson and Spearman correlation.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from onnx_tokprune.data.source import LabelScheme
from onnx_tokprune.errors import DataError

METRICS = ("accuracy", "f1", "macro_f1", "matthews_correlation", "pearson", "spearmanr")
CLASSIFICATION_METRICS = ("accuracy", "f1", "macro_f1", "matthews_correlation")


def _scheme(task: str | LabelScheme) -> LabelScheme:
    return task if isinstance(task, LabelScheme) else LabelScheme.from_task(task)


def metric_names(task: str | LabelScheme, main: str | None = None) -> tuple[str, ...]:
    """The metrics reported for a task (a GLUE name or a LabelScheme), main metric first; `main`
    moves (or adds) that metric to the front."""
    scheme = _scheme(task)
    if scheme.task is not None:
        from onnx_tokprune.data.glue import get_task

        names = get_task(scheme.task).metrics
    elif scheme.problem == "regression":
        names = ("pearson", "spearmanr")
    elif scheme.num_labels == 2:
        names = ("f1", "accuracy")
    else:
        names = ("accuracy", "macro_f1")
    if main is None:
        return tuple(names)
    allowed = ("pearson", "spearmanr") if scheme.problem == "regression" else CLASSIFICATION_METRICS
    if main not in allowed or (main == "f1" and scheme.num_labels != 2):
        usable = [m for m in allowed if not (m == "f1" and scheme.num_labels != 2)]
        raise DataError(f"metric {main!r} does not apply to this {scheme.problem} task: use one of {', '.join(usable)}")
    return (main, *(n for n in names if n != main))


def main_metric(task: str | LabelScheme, main: str | None = None) -> str:
    """The metric a task is ranked by (see the module docstring), or `main` when given."""
    return metric_names(task, main)[0]


def compute_metrics(task: str | LabelScheme, predictions: ArrayLike, labels: ArrayLike, main: str | None = None) -> dict[str, float]:
    """The task's metrics as plain floats in the 0..1 scale, main metric first.

    `predictions` are logits [N, C] (argmax taken) or class ids [N]; for regression, scores [N] or [N, 1].
    Binary f1 counts class 1 as positive. Pearson/Spearman are nan when either side is constant.
    """
    scheme = _scheme(task)
    names = metric_names(scheme, main)
    preds = np.asarray(predictions)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    what = scheme.task or "this"
    if scheme.problem == "regression":
        if preds.ndim == 2 and preds.shape[1] == 1:
            preds = preds[:, 0]
        if preds.ndim != 1:
            raise ValueError(f"task {what} needs scores of shape [N] or [N, 1], got {preds.shape}")
        scores, gold = preds.astype(np.float64), labels.astype(np.float64)
        values = {"pearson": float(pearsonr(scores, gold)[0]), "spearmanr": float(spearmanr(scores, gold)[0])}
        return {m: values[m] for m in names}
    if preds.ndim == 2:
        if preds.shape[1] != scheme.num_labels:
            raise ValueError(f"task {what} has {scheme.num_labels} classes but the logits have {preds.shape[1]} columns")
        preds = preds.argmax(axis=1)
    elif preds.ndim != 1:
        raise ValueError(f"task {what} needs logits [N, {scheme.num_labels}] or class ids [N], got {preds.shape}")
    classes, gold = preds.astype(np.int64), labels.astype(np.int64)
    compute = {
        "accuracy": lambda: accuracy_score(gold, classes),
        "f1": lambda: f1_score(gold, classes, zero_division=0.0),
        "macro_f1": lambda: f1_score(gold, classes, average="macro", labels=list(range(scheme.num_labels)), zero_division=0.0),
        "matthews_correlation": lambda: matthews_corrcoef(gold, classes),
    }
    return {m: float(compute[m]()) for m in names}
