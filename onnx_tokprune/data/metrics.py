"""GLUE metrics computed locally with scikit-learn and scipy (`evaluate` would fetch scripts from the hub)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from onnx_tokprune.data.glue import get_task


def main_metric(task: str) -> str:
    """The metric a task is ranked by (cola: matthews_correlation, mrpc/qqp: f1, stsb: pearson, else accuracy)."""
    return get_task(task).main_metric


def compute_metrics(task: str, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """The task's metrics as plain floats in GLUE's 0..1 scale, main metric first.

    `predictions` are logits [N, C] (argmax taken) or class ids [N]; for STS-B, scores [N] or [N, 1].
    Binary f1 counts class 1 as positive. Pearson/Spearman are nan when either side is constant.
    """
    spec = get_task(task)
    preds = np.asarray(predictions)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    if spec.is_regression:
        if preds.ndim == 2 and preds.shape[1] == 1:
            preds = preds[:, 0]
        if preds.ndim != 1:
            raise ValueError(f"task {spec.name} needs scores of shape [N] or [N, 1], got {preds.shape}")
        scores, gold = preds.astype(np.float64), labels.astype(np.float64)
        return {"pearson": float(pearsonr(scores, gold)[0]), "spearmanr": float(spearmanr(scores, gold)[0])}
    if preds.ndim == 2:
        if preds.shape[1] != spec.num_labels:
            raise ValueError(f"task {spec.name} has {spec.num_labels} classes but the logits have {preds.shape[1]} columns")
        preds = preds.argmax(axis=1)
    elif preds.ndim != 1:
        raise ValueError(f"task {spec.name} needs logits [N, {spec.num_labels}] or class ids [N], got {preds.shape}")
    classes, gold = preds.astype(np.int64), labels.astype(np.int64)
    values = {"accuracy": accuracy_score(gold, classes)}
    if "f1" in spec.metrics:
        values["f1"] = f1_score(gold, classes, zero_division=0.0)
    if "matthews_correlation" in spec.metrics:
        values["matthews_correlation"] = matthews_corrcoef(gold, classes)
    return {m: float(values[m]) for m in spec.metrics}
