"""Importance score and the TokenPrune reference (docs/design.md §2, §3) on hand-built inputs."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from onnx_tokprune.scoring import importance_score, keep_decision, token_prune, token_prune_reference


def _params(threshold=0.0, bin_mask=(1,), keep_ratio=1.0):
    return (
        torch.tensor(threshold, dtype=torch.float32),
        torch.tensor(bin_mask, dtype=torch.int64),
        torch.tensor(keep_ratio, dtype=torch.float32),
    )


def _kept(score, mask, **kw):
    """Sorted positions kept per row."""
    keep = keep_decision(score, mask, *_params(**kw))
    assert keep.dtype == torch.bool and keep.shape == score.shape
    return [torch.nonzero(row).flatten().tolist() for row in keep]


# ------------------------------------------------------------------------------------------ importance


def _probs_full():
    """[1, H=2, S=3, S=3], rows sum to 1, all tokens kept."""
    head0 = [[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]
    head1 = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    return torch.tensor([[head0, head1]], dtype=torch.float32)


def test_importance_fixed_normalizer_by_hand():
    # column sums over heads and query rows: j0 = 2.3, j1 = 1.45, j2 = 2.25; H = 2, N = 4
    score = importance_score(_probs_full(), torch.ones(1, 3, dtype=torch.long), 4.0)
    assert score.dtype == torch.float32 and score.shape == (1, 3)
    torch.testing.assert_close(score, torch.tensor([[2.3 / 8, 1.45 / 8, 2.25 / 8]]), rtol=0, atol=1e-7)


def test_importance_length_normalizer_by_hand():
    # N = 3 kept tokens: scores are the per-column means over heads and rows and sum to 1
    score = importance_score(_probs_full(), torch.ones(1, 3, dtype=torch.long), None)
    torch.testing.assert_close(score, torch.tensor([[2.3 / 6, 1.45 / 6, 2.25 / 6]]), rtol=0, atol=1e-7)
    assert score.sum().item() == pytest.approx(1.0, abs=1e-6)


def _probs_padded(pad_row_value):
    """Row b=1 of a batch of 2 whose last token is padding; its query row holds junk."""
    full = _probs_full()[0]
    head0 = [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0], [pad_row_value] * 3]
    head1 = [[1.0, 0.0, 0.0], [0.4, 0.6, 0.0], [pad_row_value] * 3]
    return torch.stack([full, torch.tensor([head0, head1])])


@pytest.mark.parametrize("normalizer, divisor", [(4.0, 8.0), (None, 4.0)])
def test_importance_padding_rows_do_not_contribute(normalizer, divisor):
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    score = importance_score(_probs_padded(9.0), mask, normalizer)
    # row 1: j0 = 0.5 + 0.25 + 1 + 0.4 = 2.15, j1 = 0.5 + 0.75 + 0 + 0.6 = 1.85, j2 = 0; N = 2 kept when None
    expected_1 = torch.tensor([2.15, 1.85, 0.0]) / divisor
    torch.testing.assert_close(score[1], expected_1, rtol=0, atol=1e-7)
    # the junk in the padding row changes nothing, and row 0 is independent of row 1
    torch.testing.assert_close(score, importance_score(_probs_padded(-3.0), mask, normalizer), rtol=0, atol=0)
    alone = importance_score(_probs_full(), torch.ones(1, 3, dtype=torch.long), normalizer if normalizer else None)
    torch.testing.assert_close(score[:1], alone, rtol=0, atol=0)


def test_importance_is_fp32_for_low_precision_input():
    probs = _probs_full().to(torch.bfloat16)
    score = importance_score(probs, torch.ones(1, 3, dtype=torch.long), 4.0)
    assert score.dtype == torch.float32


# ------------------------------------------------------------------------------------------ decisions

# CLS (position 0) has the lowest score; positions 8, 9 are padding with the highest scores.
# Non-CLS valid ranking (desc, ties to the lower position): 3 (0.5), 7 (0.4), 1 (0.3), 4 (0.3), 5 (0.2), 2 (0.1), 6 (0.05)
SCORES = torch.tensor([[0.0, 0.3, 0.1, 0.5, 0.3, 0.2, 0.05, 0.4, 0.9, 0.95]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 0, 0]])


def test_cls_always_kept_with_huge_threshold():
    score = torch.rand(3, 6, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    assert _kept(score, mask, threshold=1e9) == [[0], [0], [0]]
    assert _kept(SCORES, MASK, threshold=1e9) == [[0]]
    # CLS even though its score is the smallest, also when every bin is off or the ratio is tiny
    assert _kept(SCORES, MASK, bin_mask=(0, 0, 0)) == [[0]]
    assert _kept(SCORES, MASK, keep_ratio=1e-6) == [[0, 3]]


def test_threshold_zero_keeps_every_valid_token():
    gen = torch.Generator().manual_seed(1)
    score = torch.rand(4, 9, generator=gen)
    score[0, 4] = 0.0  # a zero score is still >= 0
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1, 1, 0, 1, 1, 0, 1, 0, 0], [1] + [0] * 8])
    keep = keep_decision(score, mask, *_params(threshold=0.0))
    assert torch.equal(keep, mask.bool())


def test_threshold_ties_keep():
    thr = 0.3
    t32 = torch.tensor(thr, dtype=torch.float32)
    below = torch.nextafter(t32, torch.tensor(0.0)).item()  # the float32 just under the threshold
    above = torch.nextafter(t32, torch.tensor(1.0)).item()
    score = torch.tensor([[0.0, thr, below, above, thr]], dtype=torch.float32)
    mask = torch.ones(1, 5, dtype=torch.long)
    assert _kept(score, mask, threshold=thr) == [[0, 1, 3, 4]]
    assert _kept(SCORES, MASK, threshold=0.3) == [[0, 1, 3, 4, 7]]


def test_rank_bins_by_hand_with_tie():
    # n = 7, B = 5: bin = floor(rank * 5 / 7) -> ranks 0..6 fall into bins 0, 0, 1, 2, 2, 3, 4
    # positions by rank: 3, 7, 1, 4, 5, 2, 6. The tie 1/4 (0.3) puts position 1 in bin 1, position 4 in bin 2.
    assert _kept(SCORES, MASK, bin_mask=(1, 0, 1, 0, 1)) == [[0, 3, 4, 5, 6, 7]]
    assert _kept(SCORES, MASK, bin_mask=(0, 1, 0, 1, 0)) == [[0, 1, 2]]
    assert _kept(SCORES, MASK, bin_mask=(1, 0, 0, 0, 0)) == [[0, 3, 7]]
    assert _kept(SCORES, MASK, bin_mask=(1,)) == [[0, 1, 2, 3, 4, 5, 6, 7]]
    # 25 bins > n: bin = floor(rank * 25 / 7) -> 0, 3, 7, 10, 14, 17, 21; bins 3, 10, 21 = ranks 1, 3, 6
    bins = [0] * 25
    for b in (3, 10, 21):
        bins[b] = 1
    assert _kept(SCORES, MASK, bin_mask=tuple(bins)) == [[0, 4, 6, 7]]
    bins[10], bins[7] = 0, 1  # rank 2 (position 1, the tie's winner) instead of rank 3
    assert _kept(SCORES, MASK, bin_mask=tuple(bins)) == [[0, 1, 6, 7]]


def test_rank_bins_exact_integer_arithmetic():
    # n = 10, B = 5: ranks 0, 1 -> bin 0, 2, 3 -> bin 1, ... exactly (no float rounding at the edges)
    score = torch.tensor([[0.0] + [1.0 - 0.05 * i for i in range(10)]])  # position p has rank p - 1
    mask = torch.ones_like(score, dtype=torch.long)
    assert _kept(score, mask, bin_mask=(0, 1, 0, 0, 1)) == [[0, 3, 4, 9, 10]]
    # n = 3, B = 3: one token a bin
    assert _kept(score[:, :4], mask[:, :4], bin_mask=(0, 0, 1)) == [[0, 3]]


def test_rank_bins_ignore_padding_and_removed_tokens():
    # a removed token in the middle with the highest score does not take a rank
    score = SCORES.clone()
    mask = MASK.clone()
    score[0, 2] = 0.99
    mask[0, 2] = 0
    # ranking without position 2: 3, 7, 1, 4, 5, 6 (n = 6, B = 3): bins 0, 0, 1, 1, 2, 2
    assert _kept(score, mask, bin_mask=(1, 0, 1)) == [[0, 3, 5, 6, 7]]


def test_top_k_by_hand():
    assert _kept(SCORES, MASK, keep_ratio=0.5) == [[0, 1, 3, 4, 7]]  # ceil(3.5) = 4: ranks 0..3, tie 1 before 4
    assert _kept(SCORES, MASK, keep_ratio=3 / 7 - 1e-3) == [[0, 1, 3, 7]]  # ceil(2.99) = 3: 1 wins the tie with 4
    assert _kept(SCORES, MASK, keep_ratio=0.25) == [[0, 3, 7]]  # ceil(1.75) = 2
    assert _kept(SCORES, MASK, keep_ratio=0.01) == [[0, 3]]  # ceil(0.07) = 1
    assert _kept(SCORES, MASK, keep_ratio=1.0) == [list(range(8))]


@pytest.mark.parametrize("seed", range(5))
def test_top_k_keeps_ceil_r_n(seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 40, (6,), generator=gen)
    seq = int(lengths.max())
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    score = torch.rand(6, seq, generator=gen)
    for num in range(1, 9):
        ratio = num / 8  # exact in binary: ceil(r * n) has no rounding question
        keep = keep_decision(score, mask, *_params(keep_ratio=ratio))
        for b, n_all in enumerate(lengths.tolist()):
            n = n_all - 1  # non-CLS tokens
            k = math.ceil(Fraction(num, 8) * n)
            kept = torch.nonzero(keep[b]).flatten().tolist()
            assert len(kept) == 1 + k
            assert kept[0] == 0
            # the kept ones are the k best by score
            others = sorted(range(1, n_all), key=lambda j: (-score[b, j].item(), j))
            assert kept[1:] == sorted(others[:k])


@pytest.mark.parametrize("ratio, n", [(0.15, 100), (0.09, 300), (0.15, 200), (0.35, 20)])
def test_top_k_ratio_not_representable_in_binary(ratio, n):
    score = torch.rand(1, n + 1, generator=torch.Generator().manual_seed(0))
    keep = keep_decision(score, torch.ones(1, n + 1, dtype=torch.long), *_params(keep_ratio=ratio))
    assert int(keep.sum()) == 1 + round(ratio * n)


# ------------------------------------------------------------------------------------------ compaction


def test_compaction_order_packing_and_padding():
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(3, 7, 4, generator=gen) * 100 + 7  # no zeros by accident
    score = torch.tensor(
        [
            [0.0, 0.9, 0.1, 0.8, 0.1, 0.7, 0.1],
            [0.0, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1],
            [0.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
        ]
    )
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    out = token_prune_reference(hidden, score, mask, *_params(threshold=0.5))
    expected = [[0, 1, 3, 5], [0, 2], [0, 1, 2, 3, 4, 5, 6]]
    K = 7
    assert out.hidden.shape == (3, K, 4) and out.mask.shape == (3, K) and out.kept_index.shape == (3, K)
    assert out.mask.dtype == torch.int64 and out.kept_index.dtype == torch.int64
    for b, positions in enumerate(expected):
        n = len(positions)
        assert out.kept_index[b, :n].tolist() == positions  # original order, packed left
        assert out.kept_index[b, n:].tolist() == [-1] * (K - n)
        assert out.mask[b].tolist() == [1] * n + [0] * (K - n)
        assert torch.equal(out.hidden[b, :n], hidden[b, positions])
        assert torch.equal(out.hidden[b, n:], torch.zeros(K - n, 4))  # exactly 0
    # K is the batch's largest kept count
    out2 = token_prune_reference(hidden[:2], score[:2], mask[:2], *_params(threshold=0.5))
    assert out2.kept_index.shape == (2, 4)
    assert out2.kept_index[1].tolist() == [0, 2, -1, -1]
    assert torch.equal(out2.hidden[1, 2:], torch.zeros(2, 4))


def test_padding_is_zero_even_when_a_dropped_token_is_not_finite():
    hidden = torch.ones(2, 3, 2)
    hidden[1, 2] = float("inf")  # dropped from row 1; its index fills row 1's padding slot
    score = torch.tensor([[0.0, 0.9, 0.9], [0.0, 0.9, 0.1]])
    out = token_prune_reference(hidden, score, torch.ones(2, 3, dtype=torch.long), *_params(threshold=0.5))
    assert out.kept_index.tolist() == [[0, 1, 2], [0, 1, -1]]
    assert torch.equal(out.hidden[1, 2], torch.zeros(2))


def test_removed_token_never_comes_back():
    gen = torch.Generator().manual_seed(4)
    hidden = torch.randn(2, 6, 3, generator=gen)
    score = torch.tensor([[0.1, 0.9, 0.9, 0.9, 0.9, 0.9], [0.1, 0.9, 0.9, 0.9, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0, 1, 0, 1], [1, 1, 1, 1, 0, 0]])  # positions 2, 4 removed earlier in row 0
    for params in (_params(threshold=0.0), _params(bin_mask=(1, 1, 1)), _params(keep_ratio=1.0)):
        out = token_prune_reference(hidden, score, mask, *params)
        assert out.kept_index.tolist() == [[0, 1, 3, 5], [0, 1, 2, 3]]
    # a second prune of the compacted result with everything allowed changes nothing
    first = token_prune_reference(hidden, score, mask, *_params(threshold=0.5))
    assert first.kept_index.tolist() == [[0, 1, 3, 5], [0, 1, 2, 3]]
    second = token_prune_reference(first.hidden, torch.ones(2, 4), first.mask, *_params(threshold=0.0))
    assert torch.equal(second.mask, first.mask)
    assert second.kept_index.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    # and with a padded row: the padding slots stay out even with the highest score
    row = token_prune_reference(first.hidden[:1, :2], torch.tensor([[0.0, 0.5]]), torch.tensor([[1, 0]]), *_params())
    assert row.kept_index.tolist() == [[0]] and row.mask.tolist() == [[1]]


def test_sequence_of_length_one():
    hidden = torch.randn(2, 1, 5)
    out = token_prune_reference(hidden, torch.rand(2, 1), torch.ones(2, 1, dtype=torch.long), *_params(threshold=1e9))
    assert out.kept_index.tolist() == [[0], [0]]
    assert torch.equal(out.hidden, hidden)


def test_eager_token_prune_is_the_reference():
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(3, 8, 4, generator=gen)
    score = torch.rand(3, 8, generator=gen)
    mask = torch.tensor([[1] * 8, [1] * 3 + [0] * 5, [1, 1, 0, 1, 1, 1, 0, 0]])
    params = _params(threshold=0.2, bin_mask=(1, 0, 1), keep_ratio=0.75)
    a = token_prune(hidden, score, mask, *params)
    b = token_prune_reference(hidden, score, mask, *params)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
