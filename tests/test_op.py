"""The TokenPrune ONNX function (export/op.py) equals the PyTorch reference, in plain onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from conftest import random_token_prune_case, token_prune_io
from onnx_tokprune.export.op import INPUTS, OUTPUTS, add_token_prune_function, token_prune_function
from onnx_tokprune.scoring import OP_DOMAIN, OP_NAME, OP_VERSION, token_prune_reference

OPSETS = (17, 18)


def _one_node_model(opset: int, body: str | None = None) -> onnx.ModelProto:
    inputs, outputs = token_prune_io()
    node = helper.make_node(OP_NAME, [i.name for i in inputs], [o.name for o in outputs], domain=OP_DOMAIN)
    graph = helper.make_graph([node], "token_prune_only", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return add_token_prune_function(model) if body is None else add_token_prune_function(model, body)


_SESSIONS: dict = {}


def get_session(opset: int, body: str | None = None) -> ort.InferenceSession:
    """A plain session (nothing registered: onnxruntime inlines the function body), built once."""
    key = (opset, body)
    if key not in _SESSIONS:
        model = _one_node_model(opset, body)
        onnx.checker.check_model(model, full_check=True)
        _SESSIONS[key] = ort.InferenceSession(
            model.SerializeToString(), ort.SessionOptions(), providers=["CPUExecutionProvider"]
        )
    return _SESSIONS[key]


@pytest.fixture(params=OPSETS, ids=lambda o: f"opset{o}")
def session(request):
    """The full-rule body (all three parameters apply)."""
    return get_session(request.param)


def _run_both(session, hidden, score, mask, threshold, bin_mask, keep_ratio):
    t = torch.tensor(threshold, dtype=torch.float32)
    bm = torch.tensor(list(bin_mask), dtype=torch.int64)
    kr = torch.tensor(keep_ratio, dtype=torch.float32)
    ref = token_prune_reference(hidden, score, mask, t, bm, kr)
    feeds = {
        "hidden": hidden.numpy(),
        "score": score.numpy(),
        "mask": mask.numpy(),
        "threshold": t.numpy(),
        "bin_mask": bm.numpy(),
        "keep_ratio": kr.numpy(),
    }
    got = session.run(None, feeds)
    return ref, got


def _assert_equal(ref, got, where):
    hidden, mask, kept = got
    assert mask.dtype == np.int64 and kept.dtype == np.int64 and hidden.dtype == np.float32, where
    assert kept.shape == tuple(ref.kept_index.shape), where
    np.testing.assert_array_equal(kept, ref.kept_index.numpy(), err_msg=where)
    np.testing.assert_array_equal(mask, ref.mask.numpy(), err_msg=where)
    assert hidden.shape == tuple(ref.hidden.shape), where
    np.testing.assert_allclose(hidden, ref.hidden.numpy(), rtol=0, atol=1e-6, err_msg=where)


def _random_case(gen: torch.Generator):
    return random_token_prune_case(gen, max_seq=40, dims=(4, 16))


def _params_for(rule: str, score, mask, gen):
    valid = score[mask == 1]
    if rule == "threshold":
        q = float(torch.rand(1, generator=gen))
        thr = float(torch.quantile(valid, q, interpolation="lower"))  # a score itself: score == threshold
        return thr, (1,), 1.0
    if rule == "bins5" or rule == "bins25":
        nb = 5 if rule == "bins5" else 25
        return 0.0, tuple(torch.randint(0, 2, (nb,), generator=gen).tolist()), 1.0
    if rule == "top_k":
        return 0.0, (1,), float(1.0 - torch.rand(1, generator=gen))  # (0, 1]
    # all three at once (the op's rule is their conjunction)
    thr = float(torch.quantile(valid, 0.3, interpolation="lower"))
    return thr, tuple(torch.randint(0, 2, (5,), generator=gen).tolist()), float(1.0 - 0.5 * torch.rand(1, generator=gen))


RULES = ("threshold", "bins5", "bins25", "top_k", "all")
# the body specialised to one rule (the exporter attaches it when every layer uses that rule)
BODY = {"threshold": "threshold", "bins5": "rank_bins", "bins25": "rank_bins", "top_k": "top_k", "all": None}
MATRIX = [(opset, rule, body) for opset in OPSETS for rule in RULES for body in sorted({None, BODY[rule]}, key=str)]


@pytest.mark.parametrize("opset, rule, body", MATRIX, ids=lambda v: str(v))
def test_function_matches_reference_random(opset, rule, body):
    session = get_session(opset, body)
    gen = torch.Generator().manual_seed(1000 + RULES.index(rule))
    seen_removed = seen_ties = 0
    for case in range(40):
        hidden, score, mask = _random_case(gen)
        params = _params_for(rule, score, mask, gen)
        ref, got = _run_both(session, hidden, score, mask, *params)
        _assert_equal(ref, got, f"rule={rule} body={body} case={case} shape={tuple(hidden.shape)} params={params}")
        seen_removed += int(ref.mask.sum() < mask.sum())
        valid = score[mask == 1]
        seen_ties += int(valid.unique().numel() < valid.numel())
    # the matrix actually exercised pruning and ties
    assert seen_removed >= 10 and seen_ties >= 10


def test_function_edge_cases(session):
    gen = torch.Generator().manual_seed(7)
    hidden = torch.randn(3, 12, 16, generator=gen)
    score = torch.rand(3, 12, generator=gen)
    score[:, 5] = score[:, 6] = score[:, 7]  # ties
    mask = torch.tensor([[1] * 12, [1] * 7 + [0] * 5, [1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0]])

    # a threshold that keeps everything: the smallest valid score (ties keep)
    low = float(score[mask == 1].min())
    ref, got = _run_both(session, hidden, score, mask, low, (1,), 1.0)
    _assert_equal(ref, got, "keep all")
    assert torch.equal(ref.mask.sum(1), mask.sum(1))
    assert got[2][2].tolist() == [0, 2, 3, 5, 6, 7, 8, -1, -1, -1, -1, -1]

    # a threshold above every score keeps only CLS
    ref, got = _run_both(session, hidden, score, mask, 2.0, (1,), 1.0)
    _assert_equal(ref, got, "only CLS")
    assert got[2].tolist() == [[0], [0], [0]]
    np.testing.assert_array_equal(got[0][:, 0], hidden[:, 0].numpy())

    # all bins off and a tiny ratio: only CLS, or CLS + the best token
    ref, got = _run_both(session, hidden, score, mask, 0.0, (0, 0, 0, 0, 0), 1.0)
    _assert_equal(ref, got, "bins off")
    assert got[2].tolist() == [[0], [0], [0]]
    ref, got = _run_both(session, hidden, score, mask, 0.0, (1,), 1e-6)
    _assert_equal(ref, got, "tiny ratio")
    assert got[1].sum(1).tolist() == [2, 2, 2]


@pytest.mark.parametrize("params", [(0.0, (1,), 1.0), (5.0, (1,), 1.0), (0.0, (0, 1, 1, 0, 1), 1.0), (0.0, (1,), 0.5)])
def test_function_sequence_of_length_one(session, params):
    hidden = torch.randn(4, 1, 4, generator=torch.Generator().manual_seed(8))
    score = torch.tensor([[0.5], [0.0], [1.0], [0.25]])
    ref, got = _run_both(session, hidden, score, torch.ones(4, 1, dtype=torch.long), *params)
    _assert_equal(ref, got, f"length 1 {params}")
    assert got[2].tolist() == [[0]] * 4


def test_padding_is_exactly_zero(session):
    gen = torch.Generator().manual_seed(9)
    hidden = torch.randn(2, 6, 4, generator=gen) + 100.0
    score = torch.tensor([[0.0, 0.9, 0.1, 0.9, 0.1, 0.9], [0.0, 0.1, 0.1, 0.1, 0.1, 0.1]])
    mask = torch.ones(2, 6, dtype=torch.long)
    _, got = _run_both(session, hidden, score, mask, 0.5, (1,), 1.0)
    assert got[2].tolist() == [[0, 1, 3, 5], [0, -1, -1, -1]]
    assert got[1].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    assert np.all(got[0][1, 1:] == 0.0)
    np.testing.assert_array_equal(got[0][0], hidden[0, [0, 1, 3, 5]].numpy())


@pytest.mark.parametrize("opset", OPSETS)
def test_function_proto_and_attach(opset):
    fn = token_prune_function(opset)
    assert (fn.domain, fn.name) == (OP_DOMAIN, OP_NAME)
    assert list(fn.input) == INPUTS and list(fn.output) == OUTPUTS
    assert [(o.domain, o.version) for o in fn.opset_import] == [("", opset)]
    model = _one_node_model(opset)
    assert len(model.functions) == 1
    assert sum(1 for o in model.opset_import if o.domain == OP_DOMAIN and o.version == OP_VERSION) == 1
    # attaching twice adds nothing
    add_token_prune_function(model)
    assert len(model.functions) == 1
    assert sum(1 for o in model.opset_import if o.domain == OP_DOMAIN) == 1
    # the body uses only standard ops
    assert all(node.domain in ("", "ai.onnx") for node in fn.node)
    # a body specialised to one rule has the same interface and fewer nodes
    for rule in ("threshold", "rank_bins", "top_k"):
        special = token_prune_function(opset, rule)
        assert list(special.input) == INPUTS and list(special.output) == OUTPUTS
        assert len(special.node) < len(fn.node)
        assert all(node.domain in ("", "ai.onnx") for node in special.node)
