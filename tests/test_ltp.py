"""LTP pieces on a tiny model: soft mode, the regulariser, threshold initialisation and folding."""

from __future__ import annotations

import pytest
import torch

from onnx_tokprune.config import LayerRule, PruneConfig
from onnx_tokprune.modeling import wrap
from onnx_tokprune.training.common import TrainingError
from onnx_tokprune.training.distill import DistilledObjective
from onnx_tokprune.training.ltp import LTPSettings, initial_config, learned_config, mask_regularizer


def test_initial_thresholds_rise_linearly_to_final():
    config = initial_config(4, LTPSettings(final_threshold=0.01))
    assert [r.layer for r in config.layers] == [0, 1, 2, 3]
    assert [r.threshold for r in config.layers] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert config.method == "ltp" and config.score_normalizer == "fixed" and config.normalizer_length == 128


def test_initial_thresholds_only_at_the_pruning_layers():
    config = initial_config(4, LTPSettings(final_threshold=0.01, layers=(3, 1)))
    assert [r.layer for r in config.layers] == [1, 3]
    assert [r.threshold for r in config.layers] == pytest.approx([0.005, 0.01])


@pytest.mark.parametrize("layers, message", [((), "must not be empty"), ((0, 4), r"\[0, 4\] must be within 0..3"), ((-1,), "within 0..3")])
def test_pruning_layers_must_exist(layers, message):
    with pytest.raises(TrainingError, match=message):
        LTPSettings(layers=layers).check(4)


def test_soft_mode_gates_outputs_and_trains_thresholds(tiny_bert, make_ragged_batch):
    ids, mask, types = make_ragged_batch([12, 7, 3])
    config = initial_config(4, LTPSettings(final_threshold=0.02))
    soft = wrap(tiny_bert, config, "soft", temperature=1e-3)
    out = soft(ids, mask, types)
    assert len(out.kept) == 4
    for gate in out.kept:
        assert torch.all(gate[:, 0] == 1)  # CLS always fully kept
        assert torch.all(gate[mask == 0] == 0)  # padding gated off
        assert torch.all((gate >= 0) & (gate <= 1))
    assert any(((g > 0.01) & (g < 0.99)).any() for g in out.kept), "no gate is soft: temperature too low for the test"
    loss = mask_regularizer(0.5)(out, mask)
    loss.backward()
    grads = [p.grad for n, p in soft.named_parameters() if n.endswith(".threshold")]
    assert len(grads) == 4 and all(g is not None for g in grads)
    # raising a threshold lowers every gate, so the regulariser's gradient is negative: descent raises it
    assert all(float(g) <= 0 for g in grads) and sum(float(g) for g in grads) < 0


def test_learned_config_drops_non_pruning_layers():
    config = learned_config({0: -0.001, 1: 0.0, 2: 0.004, 3: 0.009}, LTPSettings(), {"tool": "test"})
    assert config.pruning_layers == (2, 3)
    assert config.rule_for(2).threshold == pytest.approx(0.004) and config.provenance == {"tool": "test"}
    with pytest.raises(TrainingError, match="raise --lambda"):
        learned_config({0: -0.1, 1: 0.0}, LTPSettings(), {})


@pytest.mark.parametrize("field, value", [("lam", -1.0), ("temperature", 0.0), ("temperature", 2.0), ("threshold_lr", 0.0),
                                          ("distill_temperature", 0.0)])
def test_settings_out_of_range(field, value):
    with pytest.raises(TrainingError):
        LTPSettings(**{field: value}).check()


def test_ce_weight_needs_distill():
    with pytest.raises(TrainingError, match="add --distill"):
        LTPSettings(ce_weight=0.5).check()
    LTPSettings(ce_weight=0.5, distill=True).check()


def test_distillation_objective_pulls_the_soft_student_to_the_frozen_teacher(tiny_bert, make_ragged_batch):
    """Student = teacher weights with nothing pruned: the distillation loss is 0 and only the extra term
    remains; gating tokens away makes it positive, and its gradient reaches the student's thresholds,
    never the teacher (which stays in eval mode while the objective trains)."""
    import copy

    ids, mask, types = make_ragged_batch([12, 7, 3])
    labels = torch.tensor([0, 1, 2])
    teacher = wrap(copy.deepcopy(tiny_bert), None, "mask")
    student = copy.deepcopy(tiny_bert)
    objective = DistilledObjective(wrap(student, None, "mask"), teacher, temperature=2.0, ce_weight=0.0, extra=lambda out, m: torch.tensor(0.25))
    objective.train()
    assert objective.student.training and not teacher.training
    objective.eval()  # no dropout: the student computes exactly what the teacher does
    assert float(objective(ids, mask, types, labels=labels)["loss"].detach()) == pytest.approx(0.25, abs=1e-5)

    gated = wrap(student, initial_config(4, LTPSettings(final_threshold=0.02)), "soft", temperature=1e-3)
    objective = DistilledObjective(gated, teacher, temperature=2.0, ce_weight=0.0).eval()
    loss = objective(ids, mask, types, labels=labels)["loss"]
    assert float(loss.detach()) > 1e-4
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for n, p in gated.named_parameters() if n.endswith(".threshold"))
    with_ce = DistilledObjective(gated, teacher, temperature=2.0, ce_weight=1.0)(ids, mask, types, labels=labels)["loss"]
    assert float(with_ce.detach()) > float(loss.detach())


def test_hard_stage_mask_mode_equals_exported_drop_mode(tiny_bert, make_ragged_batch):
    ids, mask, types = make_ragged_batch([12, 7, 3])
    config = PruneConfig(rule="threshold", method="ltp", layers=(LayerRule(1, threshold=0.006), LayerRule(3, threshold=0.01)))
    masked, dropped = wrap(tiny_bert, config, "mask")(ids, mask, types), wrap(tiny_bert, config, "drop")(ids, mask, types)
    assert torch.allclose(masked.logits, dropped.logits, atol=1e-5)


def test_soft_mode_needs_threshold_rule(tiny_bert):
    with pytest.raises(ValueError, match="threshold-rule"):
        wrap(tiny_bert, PruneConfig(rule="top_k", layers=(LayerRule(1, keep_ratio=0.5),)), "soft")
