"""ToP pieces: hard-concrete gates, the FLOPs constraint, ranking distillation, gate mode, ToP's bin expression."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import RAGGED_LENGTHS, TINY_LAYERS, ragged_batch
from onnx_tokprune.config import ConfigError, LayerRule, PruneConfig
from onnx_tokprune.flops import EncoderShape, relative_flops
from onnx_tokprune.modeling import wrap
from onnx_tokprune.scoring import keep_decision, rank_bin, soft_rank_bins_keep
from onnx_tokprune.training.common import TrainingError
from onnx_tokprune.training.l0 import HardConcreteGate
from onnx_tokprune.training.ranking import lambda_arp2, rank_distillation_loss
from onnx_tokprune.training.constraint import FlopsConstraint, GateState, ToPGates, expected_relative_flops, match_target_flops
from onnx_tokprune.training.top import ToPSettings

SHAPE = EncoderShape(hidden=384, intermediate=1536, layers=6, labels=2, heads=12)


# ------------------------------------------------------------------------------------------ L0 gate


def test_gate_samples_hit_exact_zero_and_one_and_track_log_alpha():
    torch.manual_seed(0)
    gate = HardConcreteGate((4, 2000), init_mean=0.0)
    with torch.no_grad():
        gate.log_alpha[0] = -3.0
        gate.log_alpha[1] = 0.0
        gate.log_alpha[2] = 3.0
        gate.log_alpha[3] = 0.5
    z = gate.sample().detach()
    assert float(z.min()) == 0.0 and float(z.max()) == 1.0
    assert ((z > 0) & (z < 1)).any()
    # the fraction of non-zero samples is the open probability
    open_p = gate.open_probability()
    np.testing.assert_allclose((z > 0).float().mean(-1).numpy(), open_p.mean(-1).detach().numpy(), atol=0.04)
    open_p = open_p.detach()
    assert float(open_p[0, 0]) < float(open_p[1, 0]) < float(open_p[2, 0])


def test_gate_open_probability_is_differentiable():
    gate = HardConcreteGate((3,), init_mean=0.0)
    gate.open_probability().sum().backward()
    assert (gate.log_alpha.grad > 0).all()


def test_gate_binarize_closes_the_expected_number_lowest_first():
    gate = HardConcreteGate((2, 6), init_mean=0.0)
    with torch.no_grad():
        gate.log_alpha[0] = torch.tensor([4.0, -4.0, 4.0, -4.0, 4.0, 4.0])
        gate.log_alpha[1] = torch.tensor([4.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    expected_zeros = round(6 - float(gate.open_probability().detach()[0].sum()))
    assert expected_zeros == 2
    binary = gate.binarize()
    assert binary[0].tolist() == [1, 0, 1, 0, 1, 1]
    assert binary[1].tolist() == [1] * 6
    gate.eval()
    assert torch.equal(gate(), binary)


def test_gate_log_alpha_is_clamped():
    gate = HardConcreteGate((3,), init_mean=10.0)
    assert float(gate.log_alpha.detach().max()) <= math.log(100) + 1e-6
    with torch.no_grad():
        gate.log_alpha.fill_(-50)
    gate.constrain()
    assert float(gate.log_alpha.detach().min()) >= math.log(0.01) - 1e-6


# ------------------------------------------------------------------------------------------ constraint


def test_expected_flops_equals_analytic_flops_for_binary_gates():
    lengths = torch.tensor([10, 25, 60, 2])
    layers = (1, 2, 4)
    keep = torch.tensor([0.8, 0.5, 0.25])
    prunes = torch.tensor([1.0, 0.0, 1.0])
    got = float(expected_relative_flops(SHAPE, lengths, layers, keep, prunes))
    kept = []
    for n in lengths.tolist():
        # layer 2's gate is closed: it neither prunes nor scores, i.e. it is not a pruning layer
        kept.append({1: (n - 1) * 0.8 + 1, 4: (n - 1) * 0.8 * 0.25 + 1})
    assert got == pytest.approx(relative_flops(SHAPE, lengths.tolist(), kept), rel=1e-6)
    none = expected_relative_flops(SHAPE, lengths, layers, keep, torch.zeros(3))
    assert float(none) == pytest.approx(1.0, abs=1e-7)


def test_expected_flops_gradient_reaches_both_gate_kinds():
    gates = ToPGates((1, 2, 3), bins=10, shape=SHAPE)
    gates.expected_relative_flops(torch.tensor([20, 40])).backward()
    assert gates.bin_gates.log_alpha.grad.abs().sum() > 0
    assert gates.layer_gates.log_alpha.grad.abs().sum() > 0
    # more open bins -> more FLOPs; more likely to prune -> fewer FLOPs
    assert (gates.bin_gates.log_alpha.grad > 0).all()
    assert (gates.layer_gates.log_alpha.grad < 0).all()


def test_binarized_rules_leave_out_closed_and_all_open_layers():
    gates = ToPGates((1, 2, 3), bins=4, shape=SHAPE)
    with torch.no_grad():
        gates.bin_gates.log_alpha.copy_(torch.tensor([[4.6, -4.6, 4.6, 4.6], [4.6, 4.6, 4.6, 4.6], [4.6, 4.6, -4.6, -4.6]]))
        gates.layer_gates.log_alpha.copy_(torch.tensor([[4.6], [4.6], [-4.6]]))
    rules = gates.binarized_rules()
    assert rules == (LayerRule(1, bin_mask=(1, 0, 1, 1)),)


@pytest.mark.parametrize(
    "field, value, message",
    [("target_flops", 1.0, "target FLOPs"), ("bins", 1, "bins"), ("layers", (0, 9), "pruning layers"),
     ("rank_layers", (3,), "rank layers"), ("warmup_epochs", 5.0, "warm-up")],
)
def test_settings_are_checked(field, value, message):
    kwargs = {"layers": (1, 2)} if field == "rank_layers" else {}
    settings = ToPSettings(**{**kwargs, field: value})
    with pytest.raises(TrainingError, match=message):
        settings.check(TINY_LAYERS)


def test_default_layers_follow_top():
    settings = ToPSettings()
    assert settings.pruning_layers(6) == (1, 2, 3, 4)
    assert settings.distilled_layers(6) == (1, 2)


# ------------------------------------------------------------------------------------------ ranking


def test_arp2_is_small_when_ordered_and_large_when_reversed():
    relevance = torch.tensor([[3.0, 2.0, 1.0]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    ordered = lambda_arp2(torch.tensor([[9.0, 5.0, 1.0]]), relevance, valid)
    reversed_ = lambda_arp2(torch.tensor([[1.0, 5.0, 9.0]]), relevance, valid)
    assert float(ordered) < 0.2 < 10 < float(reversed_)
    # by hand: pairs (0,1) d=1, (0,2) d=2, (1,2) d=1 on score gaps 4, 8, 4
    by_hand = sum(d * math.log2(1 + math.exp(-gap)) for d, gap in ((1, 4), (2, 8), (1, 4)))
    assert float(ordered) == pytest.approx(by_hand, rel=1e-5)


def test_rank_distillation_pushes_towards_teacher_order_and_ignores_cls_and_padding():
    teacher = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    student = torch.tensor([[0.0, 0.4, 0.2, 0.3, 0.7]], requires_grad=True)
    loss = rank_distillation_loss(student, teacher, mask, top_k=3)
    loss.backward()
    grad = student.grad[0]
    assert grad[0] == 0 and grad[4] == 0  # CLS and padding take no part
    assert grad[2] < 0 < grad[1]  # teacher's best (pos 2) goes up, its worst (pos 1) down
    moved = student.detach() - 0.5 * student.grad
    assert float(rank_distillation_loss(moved, teacher, mask, top_k=3)) < float(loss)


# ------------------------------------------------------------------------------------------ decisions


def test_soft_keep_with_binary_gates_equals_the_hard_rule():
    gen = torch.Generator().manual_seed(3)
    score = torch.rand(4, 12, generator=gen)
    mask = (torch.arange(12) < torch.tensor([[12], [7], [3], [1]])).long()
    bins = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    soft = soft_rank_bins_keep(score, mask, bins, torch.tensor(1.0))
    hard = keep_decision(score, mask, torch.tensor(0.0), bins.long(), torch.tensor(1.0))
    assert torch.equal(soft.bool(), hard)
    closed_layer = soft_rank_bins_keep(score, mask, bins, torch.tensor(0.0))
    assert torch.equal(closed_layer, mask.float())


def test_soft_keep_carries_gradient_to_the_gates():
    score = torch.rand(2, 9)
    mask = torch.ones(2, 9, dtype=torch.long)
    bins = torch.full((3,), 0.5, requires_grad=True)
    layer = torch.tensor(0.3, requires_grad=True)
    soft_rank_bins_keep(score, mask, bins, layer).sum().backward()
    assert (bins.grad > 0).all() and float(layer.grad) < 0


def test_gate_mode_with_binary_gates_is_mask_mode(tiny_bert):
    rules = (LayerRule(1, bin_mask=(1, 0, 1, 1, 0)), LayerRule(2, bin_mask=(1, 1, 1, 1, 1)))
    config = PruneConfig(rule="rank_bins", method="top", score_normalizer="length", layers=rules)
    batch = ragged_batch(RAGGED_LENGTHS, seed=4)
    gate_mode = wrap(tiny_bert, config, "gate", observe_layers=(3,))
    gates = {1: (torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]), torch.tensor(1.0)), 2: (torch.ones(5), torch.tensor(0.0))}
    with torch.no_grad():
        got = gate_mode(*batch, gates=gates)
        mask_mode = wrap(tiny_bert, PruneConfig(rule="rank_bins", method="top", score_normalizer="length", layers=rules[:1]), "mask")
        ref = mask_mode(*batch)
    np.testing.assert_allclose(got.logits.numpy(), ref.logits.numpy(), atol=1e-5)
    assert torch.equal(got.kept[0].bool(), ref.kept[0].bool())
    assert set(got.scores) == {1, 2, 3}
    with pytest.raises(ValueError, match="gates"):
        gate_mode(*batch)


# ------------------------------------------------------------------------------------------ ToP's bin expression


def _top_reference_bin(rank: int, n: int, bins: int) -> int:
    """ToP's released expression in float32 numpy: int(rank / (n + 1e-6) * B)."""
    q = np.float32(rank) / (np.float32(n) + np.float32(1e-6))
    return int(np.float32(min(max(q, np.float32(0)), np.float32(1))) * np.float32(bins))


@pytest.mark.parametrize(
    "n, bins, differs", [(10, 25, True), (20, 25, True), (5, 50, True), (37, 50, False), (128, 100, False), (3, 20, False)]
)
def test_top_bin_expression_matches_released_code(n, bins, differs):
    """ToP's expression lands one bin lower where rank * B / n is whole, but only while float32(n + 1e-6)
    differs from n (n up to about 24): from 32 on, the 1e-6 vanishes in float32."""
    rank = torch.arange(n).unsqueeze(0)
    count = torch.tensor([[n]])
    got = rank_bin(rank, count, bins, "top")[0].tolist()
    assert got == [min(_top_reference_bin(r, n, bins), bins - 1) for r in range(n)]
    exact = rank_bin(rank, count, bins, "exact")[0].tolist()
    assert exact == [r * bins // n for r in range(n)]
    whole = [r for r in range(n) if (r * bins) % n == 0 and r > 0]
    assert [r for r in range(n) if got[r] != exact[r]] == (whole if differs else [])


def test_bin_rounding_is_validated():
    with pytest.raises(ConfigError, match="bin_rounding"):
        PruneConfig(rule="threshold", bin_rounding="top", layers=(LayerRule(1, threshold=0.1),))
    with pytest.raises(ConfigError, match="bin_rounding"):
        PruneConfig(rule="rank_bins", bin_rounding="round", layers=(LayerRule(1, bin_mask=(1, 0)),))
    cfg = PruneConfig(rule="rank_bins", bin_rounding="top", layers=(LayerRule(1, bin_mask=(1, 0)),))
    assert PruneConfig.from_json(cfg.to_json()) == cfg


def test_matching_moves_bins_in_log_alpha_order_towards_the_target():
    """A fake measure: each closed bin saves 0.05 of the FLOPs. Binarised, layer 1 closes 2 bins and
    layer 2 (gate closed) none: 0.90. A 0.76 target closes the open bins with the lowest log-alpha
    in layers that prune (layer 1 only) until the next would overshoot."""
    gates = ToPGates((1, 2), bins=6, shape=SHAPE)
    with torch.no_grad():
        gates.bin_gates.log_alpha.copy_(torch.tensor([[4.6, 4.0, 3.0, 2.5, -4.6, -4.6], [-4.6, -4.6, 4.6, 4.6, 4.6, 4.6]]))
        gates.layer_gates.log_alpha.copy_(torch.tensor([[4.6], [-4.6]]))
    method = {"rule": "rank_bins", "method": "top", "score_normalizer": "length"}

    def measure(config):
        return 1.0 - 0.05 * sum(r.bin_mask.count(0) for r in config.layers)

    rules, flops, changed = match_target_flops(gates, measure, 0.76, method)
    assert changed == 3 and flops == pytest.approx(0.75)
    assert rules == (LayerRule(1, bin_mask=(1, 0, 0, 0, 0, 0)),)
    # over-pruned: the closed bin with the largest log-alpha opens first
    rules, flops, changed = match_target_flops(gates, measure, 0.95, method)
    assert changed == 1 and rules == (LayerRule(1, bin_mask=(1, 1, 1, 1, 1, 0)),)
    # already closest: nothing moves
    assert match_target_flops(gates, measure, 0.91, method)[2] == 0


def test_matching_skips_bins_that_change_nothing():
    """Binarised: bins 1 and 2 closed (0.9). Bin 1 holds no sampled token, so opening it changes
    nothing: it is skipped (left closed) and bin 2 opens."""
    gates = ToPGates((1,), bins=4, shape=SHAPE)
    with torch.no_grad():
        gates.bin_gates.log_alpha.copy_(torch.tensor([[4.6, -4.6, -4.6, 2.0]]))
        gates.layer_gates.log_alpha.fill_(4.6)
    method = {"rule": "rank_bins", "method": "top", "score_normalizer": "length"}

    def measure(config):
        return 1.0 - 0.1 * (config.layers[0].bin_mask[2] == 0) if config else 1.0

    assert gates.binarized_rules() == (LayerRule(1, bin_mask=(1, 0, 0, 1)),)
    rules, flops, changed = match_target_flops(gates, measure, 1.0, method)
    assert rules == (LayerRule(1, bin_mask=(1, 0, 1, 1)),) and flops == pytest.approx(1.0) and changed == 1


def test_flops_constraint_ramps_the_target_and_ascends_its_multipliers():
    constraint = FlopsConstraint(target_flops=0.4, warmup_steps=10)
    assert constraint.target(0) == 1.0 and constraint.target(5) == pytest.approx(0.7) and constraint.target(50) == pytest.approx(0.4)
    expected = torch.tensor(0.9, requires_grad=True)  # above the target: sparsity short by 0.3 - 0.1 at step 5
    penalty, record = constraint(expected, 5)
    assert record["target_flops"] == pytest.approx(0.7) and record["expected_flops"] == pytest.approx(0.9)
    penalty.backward()
    # the multipliers' gradient is negated (gradient ascent): an optimizer step moves lambda1 along the gap (here
    # down), so lambda1 * gap, the penalty, grows while the sparsity target is missed
    assert constraint.lagrange.grad[0] == pytest.approx(-(0.1 - 0.3)) and constraint.lagrange.grad[1] == pytest.approx(-(0.2**2))


def test_gate_state_round_trips_and_refuses_what_does_not_fit(tmp_path):
    gates = ToPGates((1, 3), 4, SHAPE)
    state = gates.state(0.5, torch.tensor([0.1, 0.2]), [{"step": 1, "expected_flops": 0.9}])
    (tmp_path / "top_gates.json").write_text(__import__("json").dumps(state.to_json()))
    again = GateState.load(tmp_path)
    assert again == state
    rebuilt = ToPGates.from_state(again, SHAPE)
    assert torch.allclose(rebuilt.bin_gates.log_alpha, torch.tensor(state.bin_log_alpha))
    assert rebuilt.binarized_rules() == gates.binarized_rules()
    with pytest.raises(TrainingError, match="top_gates.json not found: the checkpoint was not written by tokprune-train top"):
        GateState.load(tmp_path / "elsewhere")
    with pytest.raises(TrainingError, match="bin_log_alpha"):
        GateState.from_json({**state.to_json(), "bin_log_alpha": [[0.0]]})
    with pytest.raises(TrainingError, match="target_flops"):
        GateState.from_json({**state.to_json(), "target_flops": 1.5})
    with pytest.raises(TrainingError, match="unknown key"):
        GateState.from_json({**state.to_json(), "extra": 1})
    # a checkpoint from before the file: its provenance held the log-alphas
    legacy = {"target_flops": 0.7, "candidate_layers": [1], "bin_log_alpha": [[1.0, -1.0]], "layer_log_alpha": [1.0], "task": "sst2"}
    assert GateState.load(tmp_path / "elsewhere", legacy).candidate_layers == [1]


def test_measured_flops_do_not_depend_on_how_rows_are_batched(tiny_bert, minilm_tokenizer):
    """FLOPs matching measures in length-sorted batches: padding must not leak into any row's kept count."""
    from conftest import TINY_VOCAB
    from onnx_tokprune.training.top import measured_relative_flops

    config = PruneConfig(rule="rank_bins", method="top", score_normalizer="length", layers=(LayerRule(1, bin_mask=(1, 0, 1, 1, 0)),))
    rng = np.random.default_rng(3)
    rows = []
    for n in rng.permutation([5, 31, 9, 17, 40, 6, 23, 12, 28, 8]):
        ids = [1, *rng.integers(3, TINY_VOCAB, n - 2).tolist(), 2]
        rows.append({"input_ids": ids, "attention_mask": [1] * n, "token_type_ids": [0] * n})
    shape = EncoderShape.from_hf(tiny_bert.config)
    batched = measured_relative_flops(tiny_bert, config, rows, minilm_tokenizer, shape, batch_size=4)
    alone = measured_relative_flops(tiny_bert, config, rows, minilm_tokenizer, shape, batch_size=1)
    assert batched == pytest.approx(alone, abs=1e-12) and 0.5 < batched < 1
