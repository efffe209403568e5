"""GLUE metrics computed locally (scikit-learn / scipy; `evaluate` would fetch scripts from the hub)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from onnx_tokprune.data.glue import get_task


def main_metric(task: str) -> str:
    """The metric a task is ranked by (GLUE's first listed one)."""
    return get_task(task).metrics[0]


def compute_metrics(task: str, predictions, labels) -> dict[str, float]:
    """Task metrics from logits [N,C] (argmax taken) or regression outputs [N] / [N,1]."""
    spec = get_task(task)
    preds = np.asarray(predictions)
    labels = np.asarray(labels)
    if spec.num_labels == 1:
        scores = preds.reshape(len(preds))
        return {"pearson": float(pearsonr(scores, labels)[0]), "spearmanr": float(spearmanr(scores, labels)[0])}
    classes = preds.argmax(-1) if preds.ndim == 2 else preds
    out = {"accuracy": float(accuracy_score(labels, classes))}
    if "f1" in spec.metrics:
        out["f1"] = float(f1_score(labels, classes))
    if "matthews_correlation" in spec.metrics:
        out["matthews_correlation"] = float(matthews_corrcoef(labels, classes))
    return {m: out[m] for m in spec.metrics}
