"""Parity's verdict: real kept-set mismatches fail, float-ambiguous decisions are reported apart."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_tokprune.config import LayerRule
from onnx_tokprune.parity import KeptSetError, ParityReport, _ambiguous, _compare, _Decisions

ENTERING = np.array([0, 1, 2, 3, 4])


def test_threshold_decision_at_the_threshold_is_ambiguous():
    rule = LayerRule(1, threshold=0.5)
    scores = np.array([1.0, np.float32(0.5) * (1 + 1e-7), 0.2, 0.9, 0.1], dtype=np.float32)
    assert _ambiguous(rule, ENTERING, scores, np.array([0, 1, 3]), np.array([0, 3]))
    # token 3 (score 0.9) is far from the threshold: a real mismatch, even beside an ambiguous one
    assert not _ambiguous(rule, ENTERING, scores, np.array([0, 1, 3]), np.array([0]))


def test_rank_decision_between_near_tied_scores_is_ambiguous():
    rule = LayerRule(1, keep_ratio=0.5)
    scores = np.array([1.0, 0.3, 0.3 * (1 + 1e-7), 0.1, 0.05], dtype=np.float32)
    assert _ambiguous(rule, ENTERING, scores, np.array([0, 1]), np.array([0, 2]))
    assert not _ambiguous(rule, ENTERING, scores, np.array([0, 1]), np.array([0, 3]))


def compare(other_kept_row1):
    layers = ["kept_index_1"]
    left = (np.array([[0.0, 1.0], [0.0, 1.0]]), {"kept_index_1": [np.array([0, 1, 3]), np.array([0, 1, 3])]})
    right = (np.array([[0.0, 1.0], [0.5, 0.0]]), {"kept_index_1": [np.array([0, 1, 3]), other_kept_row1]})
    scores = np.array([1.0, 0.5, 0.2, 0.9, 0.1], dtype=np.float32)
    decisions = _Decisions([LayerRule(1, threshold=0.5)], {"kept_index_1": [ENTERING] * 2}, {"kept_index_1": [scores] * 2})
    return _compare("pytorch-drop vs onnxruntime", 1, layers, left, right, decisions)


def test_ambiguous_rows_pass_and_are_reported_apart():
    comparison = compare(np.array([0, 3]))
    assert comparison.ambiguous_examples == [1]
    assert comparison.kept_ambiguous_rows == {"kept_index_1": 1} and comparison.kept_mismatch_rows == {"kept_index_1": 0}
    assert comparison.max_abs_logit_diff == 0.0  # the ambiguous row's logits are left out
    report = ParityReport([comparison], atol=1e-4)
    report.check()
    assert "| 1 |" in report.table()


def test_real_mismatch_fails():
    comparison = compare(np.array([0, 1]))
    assert comparison.ambiguous_examples == [] and comparison.kept_mismatch_rows == {"kept_index_1": 1}
    with pytest.raises(KeptSetError, match="kept set differs on 1/2 rows"):
        ParityReport([comparison], atol=1e-4).check()
