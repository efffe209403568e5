"""PrunedEncoder on a tiny random BERT: unpruned parity with HF, drop == mask, batch == row alone."""

from __future__ import annotations

from conftest import RAGGED_LENGTHS, prune_configs

import pytest
import torch

from onnx_tokprune.artifact import kept_output_name, original_positions
from onnx_tokprune.config import ConfigError, LayerRule, PruneConfig
from onnx_tokprune.modeling import PrunedEncoder, kept_positions, wrap

LENGTHS = RAGGED_LENGTHS

CONFIGS = prune_configs()
CASES = sorted(CONFIGS)


def make_config(rule: str, normalizer: str) -> PruneConfig:
    return PruneConfig(rule=rule, layers=tuple(CONFIGS[rule, normalizer]), score_normalizer=normalizer)


def kept_sets(record: torch.Tensor) -> list[list[int]]:
    """Kept original positions per row of a PrunedOutput.kept entry ([B,S] over the input, any mode)."""
    assert set(torch.unique(record).tolist()) <= {0.0, 1.0}
    return kept_positions(record)


def run(encoder: PrunedEncoder, batch):
    with torch.no_grad():
        return encoder(*batch)


@pytest.fixture(scope="module")
def batch():
    from conftest import ragged_batch

    return ragged_batch(LENGTHS, seed=1)


def test_unpruned_equals_hf(tiny_bert, batch):
    encoder = wrap(tiny_bert, None)
    assert encoder.pruning_layers == ()
    out = run(encoder, batch)
    assert out.kept == ()
    with torch.no_grad():
        hf = tiny_bert(input_ids=batch[0], attention_mask=batch[1], token_type_ids=batch[2]).logits
    assert out.logits.shape == (len(LENGTHS), 3)
    torch.testing.assert_close(out.logits, hf, rtol=0, atol=1e-5)
    # the mask mode without a config is the same model
    torch.testing.assert_close(run(wrap(tiny_bert, None, mode="mask"), batch).logits, hf, rtol=0, atol=1e-5)


def test_prune_nothing_equals_hf(tiny_bert, batch):
    """Scoring layers (exp/sum softmax) that keep everything change nothing."""
    cfg = PruneConfig(rule="threshold", layers=tuple(LayerRule(i, threshold=0.0) for i in range(4)))
    out = run(wrap(tiny_bert, cfg), batch)
    with torch.no_grad():
        hf = tiny_bert(input_ids=batch[0], attention_mask=batch[1], token_type_ids=batch[2]).logits
    torch.testing.assert_close(out.logits, hf, rtol=0, atol=1e-5)
    everything = [list(range(n)) for n in LENGTHS]
    assert len(out.kept) == 4
    for record in out.kept:
        assert record.shape == (len(LENGTHS), max(LENGTHS))
        assert kept_sets(record) == everything


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
def test_drop_equals_mask(tiny_bert, batch, case):
    cfg = make_config(*case)
    drop = wrap(tiny_bert, cfg, mode="drop")
    mask = wrap(tiny_bert, cfg, mode="mask")
    assert drop.pruning_layers == mask.pruning_layers == cfg.pruning_layers
    out_d, out_m = run(drop, batch), run(mask, batch)
    torch.testing.assert_close(out_d.logits, out_m.logits, rtol=0, atol=1e-5)
    assert len(out_d.kept) == len(out_m.kept) == len(cfg.layers)
    previous = [list(range(n)) for n in LENGTHS]
    removed_some = False
    composed = original_positions({kept_output_name(layer): k.numpy() for layer, k in zip(cfg.pruning_layers, out_d.kept_index)})
    for layer, rec_d, rec_m in zip(cfg.pruning_layers, out_d.kept, out_m.kept):
        sets_d, sets_m = kept_sets(rec_d), kept_sets(rec_m)
        assert sets_d == sets_m, f"layer {layer}"
        # drop mode's tensors: packed left, original order, padded with -1, K = the largest kept count
        packed = composed[kept_output_name(layer)]
        assert packed.shape[1] == max(len(s) for s in sets_d)
        for row, kept in zip(packed.tolist(), sets_d):
            assert row == kept + [-1] * (len(row) - len(kept))
        for now, before in zip(sets_d, previous):
            assert now[0] == 0  # CLS stays
            assert set(now) <= set(before)  # a removed token never comes back
            removed_some |= len(now) < len(before)
        previous = sets_d
    assert removed_some, "the config removed nothing: the test would not see a wrong decision"
    assert any(len(s) > 1 for s in previous), "only CLS left: the test would not see a wrong decision"


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
def test_batch_equals_rows_alone(tiny_bert, batch, case):
    encoder = wrap(tiny_bert, make_config(*case))
    out = run(encoder, batch)
    for b, n in enumerate(LENGTHS):
        alone = run(encoder, tuple(t[b : b + 1, :n] for t in batch))
        torch.testing.assert_close(out.logits[b : b + 1], alone.logits, rtol=0, atol=1e-5)
        for rec_batch, rec_alone in zip(out.kept, alone.kept):
            assert kept_sets(rec_batch[b : b + 1]) == kept_sets(rec_alone)
            assert rec_alone.min() >= 0  # a single row has no padding


def test_pruning_changes_logits(tiny_bert, batch):
    """The pruned model is not silently the unpruned one."""
    pruned = run(wrap(tiny_bert, make_config("top_k", "fixed")), batch).logits
    full = run(wrap(tiny_bert, None), batch).logits
    assert (pruned - full).abs().max() > 1e-3


def test_bad_mode(tiny_bert):
    with pytest.raises(ValueError, match="bogus"):
        wrap(tiny_bert, None, mode="bogus")
    with pytest.raises(ValueError, match="mode must be one of"):
        wrap(tiny_bert, make_config("threshold", "fixed"), mode="bogus")


def test_layer_out_of_range(tiny_bert):
    cfg = PruneConfig(rule="threshold", layers=(LayerRule(1, threshold=0.01), LayerRule(4, threshold=0.01)))
    with pytest.raises(ConfigError, match=r"out of range.*4 layers"):
        wrap(tiny_bert, cfg)
