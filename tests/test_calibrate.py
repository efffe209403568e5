"""Calibration schedules and the FLOPs solver (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_tokprune.calibrate import CalibrationError, keep_schedule, schedule_flops, solve_keep
from onnx_tokprune.flops import EncoderShape

MINILM = EncoderShape(384, 1536, 6, labels=2, heads=12)
LENGTHS = [12, 25, 40, 70]


def test_schedules_end_at_keep():
    assert keep_schedule(0.5, 4) == pytest.approx([0.875, 0.75, 0.625, 0.5])
    assert keep_schedule(0.125, 3, "geometric") == pytest.approx([0.5, 0.25, 0.125])


def test_geometric_reaches_below_the_linear_floor():
    layers = list(range(6))
    floor = schedule_flops(MINILM, LENGTHS, layers, 0.0)
    assert 0.45 < floor < 0.55
    with pytest.raises(CalibrationError, match="--schedule geometric"):
        solve_keep(MINILM, LENGTHS, layers, 0.4)
    keep = solve_keep(MINILM, LENGTHS, layers, 0.4, "geometric")
    assert schedule_flops(MINILM, LENGTHS, layers, keep, "geometric") == pytest.approx(0.4, abs=1e-6)


def test_solve_keep_linear_meets_target():
    keep = solve_keep(MINILM, LENGTHS, [1, 2, 3, 4], 0.8)
    assert 0 < keep < 1 and schedule_flops(MINILM, LENGTHS, [1, 2, 3, 4], keep) == pytest.approx(0.8, abs=1e-6)


def test_threshold_sits_in_a_gap_wide_enough():
    from onnx_tokprune.calibrate import DECISION_RTOL, threshold_with_margin, within_margin

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], dtype=np.float32)
    theta = threshold_with_margin(scores, 0.5)
    assert theta == pytest.approx(0.55) and (scores >= theta).sum() == 4
    # at the requested fraction two scores tie within the margin: the nearest wide gap is used instead
    tied = np.array([0.9, 0.8, 0.7, 0.6, 0.6 * (1 - DECISION_RTOL / 4), 0.4, 0.3, 0.2], dtype=np.float32)
    theta = threshold_with_margin(tied, 0.5)
    assert not within_margin(tied, theta).any()
    assert (tied >= theta).sum() in (3, 5)
    # exact ties (the [UNK]-only tokenizer): equal scores never straddle a threshold
    ties = np.array([0.5] * 6 + [0.25] * 6, dtype=np.float32)
    assert (ties >= threshold_with_margin(ties, 0.3)).sum() == 6


def test_scores_that_do_not_separate_are_an_error():
    from onnx_tokprune.calibrate import threshold_with_margin

    with pytest.raises(CalibrationError, match="do not separate"):
        threshold_with_margin(np.full(50, 1 / 7, dtype=np.float32), 0.5)


def test_unk_only_tokenizer_threshold_is_never_on_a_score(tiny_bert):
    """The probe's recipe: a tokenizer that turns every word into [UNK] makes rows of equal length
    score identically, so pooled scores come in exact ties; the threshold used to land half-way between
    two equal scores, i.e. on the score itself, and PyTorch and onnxruntime then disagreed by rounding."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from onnx_tokprune.calibrate import _collect_scores, calibrate, within_margin
    from onnx_tokprune.config import LayerRule, PruneConfig
    from onnx_tokprune.data.text import TextExample
    from onnx_tokprune.modeling import wrap
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    encoder = TextEncoder(tokenizer, 512)
    examples = [TextExample("a gorgeous , witty , seductive movie .")] * 8 + [TextExample("unflinchingly bleak and desperate")] * 8
    result = calibrate(tiny_bert, encoder, examples, keep=0.5, progress=False)
    rows = encoder.token_ids(examples)
    chosen = []
    for rule in result.config.layers:
        probe = PruneConfig(rule="threshold", layers=(*chosen, LayerRule(rule.layer, threshold=0.0)))
        scores = _collect_scores(wrap(tiny_bert, probe, "drop"), encoder, rows, rule.layer, 32)
        assert len(np.unique(scores)) < len(scores), "the recipe must produce exact ties"
        assert not within_margin(scores, rule.threshold).any(), f"layer {rule.layer}: a score sits on the threshold"
        chosen.append(rule)


def test_trained_threshold_on_a_score_is_moved_off_it(tiny_checkpoint):
    """LTP's learned thresholds get calibration's margin: one that equals a score is moved to a gap."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from conftest import SST2_SENTENCES
    from onnx_tokprune.calibrate import _collect_scores, settle_thresholds, within_margin
    from onnx_tokprune.config import LayerRule, PruneConfig
    from onnx_tokprune.data.text import TextExample
    from onnx_tokprune.modeling import wrap
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint).eval()
    encoder = TextEncoder(AutoTokenizer.from_pretrained(tiny_checkpoint).backend_tokenizer, 64)
    examples = [TextExample(s) for s in SST2_SENTENCES]
    probe = PruneConfig(rule="threshold", layers=(LayerRule(1, threshold=0.0),))
    scores = _collect_scores(wrap(model, probe, "drop"), encoder, encoder.token_ids(examples), 1, 32)
    on_a_score = float(np.sort(scores)[len(scores) // 2])
    config = PruneConfig(rule="threshold", method="ltp", layers=(LayerRule(1, threshold=on_a_score),))
    settled, moved = settle_thresholds(model, config, encoder, examples)
    assert list(moved) == [1] and moved[1][0] == on_a_score
    assert not within_margin(scores, settled.layers[0].threshold).any()
    assert abs((scores >= settled.layers[0].threshold).mean() - (scores >= on_a_score).mean()) < 0.1
    untouched, nothing = settle_thresholds(model, settled, encoder, examples)
    assert nothing == {} and untouched == settled
