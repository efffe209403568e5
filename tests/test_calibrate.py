"""Calibration schedules and the FLOPs solver (no model needed)."""

from __future__ import annotations

import pytest

from onnx_tokprune.calibrate import CalibrationError, keep_schedule, schedule_flops, solve_keep
from onnx_tokprune.flops import EncoderShape

MINILM = EncoderShape(384, 1536, 6, heads=12)
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
