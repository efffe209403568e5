"""Seeded parity fuzz, kept from the reliability probe: random ragged batches (batch 1..8, lengths
1..512) through every rule, including keep-everything and keep-only-CLS parameters, on the plain and
the --optimize graph, with the compiled kernels and with the portable functions: 0 kept-set
mismatches and |Δlogit| <= 1e-4 against PyTorch drop mode. And one session shared by 8 threads gives
the sequential results."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from conftest import make_session, ragged_batch
from onnx_tokprune.config import LayerRule, PruneConfig
from onnx_tokprune.artifact import kept_output_name
from onnx_tokprune.export.exporter import to_onnx
from onnx_tokprune.export.passes import optimize_pruned
from onnx_tokprune.modeling import wrap
from onnx_tokprune.artifact import original_positions

ATOL = 1e-4
BATCHES_PER_GRAPH = 3
MAX_LENGTH = 512

# (rule, normaliser) -> per-layer parameters: typical, keep everything, keep only CLS (or the least a rule allows)
CASES = {
    ("threshold", "fixed", "typical"): [LayerRule(0, threshold=0.0065), LayerRule(2, threshold=0.0078)],
    ("threshold", "length", "keep-all"): [LayerRule(1, threshold=0.0), LayerRule(3, threshold=0.0)],
    ("threshold", "fixed", "cls-only"): [LayerRule(1, threshold=100.0)],
    ("rank_bins", "fixed", "typical"): [LayerRule(0, bin_mask=(1, 1, 0, 1, 0)), LayerRule(2, bin_mask=(1, 0, 1, 1, 0))],
    ("rank_bins", "length", "keep-all"): [LayerRule(1, bin_mask=(1, 1, 1, 1, 1))],
    ("rank_bins", "fixed", "cls-only"): [LayerRule(0, bin_mask=(0, 0, 0, 0, 0)), LayerRule(3, bin_mask=(0, 1, 0, 1, 0))],
    ("top_k", "length", "typical"): [LayerRule(0, keep_ratio=0.8), LayerRule(2, keep_ratio=0.5)],
    ("top_k", "fixed", "keep-all"): [LayerRule(2, keep_ratio=1.0)],
    ("top_k", "fixed", "least"): [LayerRule(1, keep_ratio=1e-6), LayerRule(3, keep_ratio=1e-6)],
}


def random_batches(seed: int):
    gen = np.random.default_rng(seed)
    for i in range(BATCHES_PER_GRAPH):
        batch = int(gen.integers(1, 9))
        # one row at the maximum length in the first batch, short rows everywhere
        lengths = gen.integers(1, MAX_LENGTH + 1 if i == 0 else 64, size=batch)
        if i == 0:
            lengths[0] = MAX_LENGTH
        yield ragged_batch(lengths.tolist(), seed=seed * 100 + i)


@pytest.fixture(scope="module")
def graphs(tiny_bert):
    """(case, graph kind) -> (encoder, ONNX model)."""
    found = {}
    for case, rules in CASES.items():
        rule, normalizer, _ = case
        encoder = wrap(tiny_bert, PruneConfig(rule=rule, layers=tuple(rules), score_normalizer=normalizer), "drop")
        plain = to_onnx(encoder, 17)
        optimized, _ = optimize_pruned(plain, tiny_bert.config, encoder.pruning_layers)
        found[case, "plain"] = (encoder, plain)
        found[case, "optimize"] = (encoder, optimized)
    return found


def run_session(session, batch) -> dict[str, np.ndarray]:
    feeds = {n: t.numpy() for n, t in zip(("input_ids", "attention_mask", "token_type_ids"), batch)}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


@pytest.mark.parametrize("with_kernel", [False, True], ids=["function", "kernel"])
def test_parity_fuzz(graphs, with_kernel, request):
    library = request.getfixturevalue("kernel_library") if with_kernel else None
    rows = mismatches = 0
    worst = 0.0
    for seed, ((case, kind), (encoder, model)) in enumerate(graphs.items()):
        session = make_session(model, library)
        for batch in random_batches(seed):
            got = run_session(session, batch)
            with torch.no_grad():
                ref = encoder(*batch)
            composed = original_positions(got)
            for layer, kept in zip(encoder.pruning_layers, ref.kept):
                same = [np.array_equal(a[a >= 0], np.flatnonzero(b)) for a, b in zip(composed[kept_output_name(layer)], kept.numpy())]
                mismatches += len(same) - sum(same)
            rows += len(ref.logits)
            worst = max(worst, float(np.abs(got["logits"] - ref.logits.numpy()).max()))
            if case[2] == "cls-only" and case[0] == "threshold":
                assert all((composed[kept_output_name(1)] >= 0).sum(1) == 1), f"{case}: more than CLS kept"
            if case[2] == "keep-all":
                lengths = batch[1].sum(1).numpy()
                for layer in encoder.pruning_layers:
                    assert ((composed[kept_output_name(layer)] >= 0).sum(1) == lengths).all(), f"{case}: a token was removed"
    print(f"fuzz ({'kernel' if with_kernel else 'function'}): {rows} rows, {mismatches} kept-set mismatches, max |Δlogit| {worst:.2e}")
    assert mismatches == 0
    assert worst <= ATOL


def test_one_session_shared_by_8_threads_gives_the_sequential_results(graphs):
    _, model = graphs[("threshold", "fixed", "typical"), "optimize"]
    session = make_session(model, None, intra_op_num_threads=1)
    batches = [ragged_batch([int(n) for n in np.random.default_rng(s).integers(1, 96, size=1 + s % 8)], seed=s) for s in range(32)]
    sequential = [run_session(session, b) for b in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda b: run_session(session, b), batches))
    for a, b in zip(sequential, parallel):
        assert a.keys() == b.keys()
        for name in a:
            assert np.array_equal(a[name], b[name]), name

