"""tokprune::ScoredAttention: the compiled kernel, the portable ONNX function and the PyTorch
reference agree (context and score), and the exported encoder's scoring layers use it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from conftest import make_session
from onnx_tokprune.export.op import add_scored_attention_function
from onnx_tokprune.scored_attention import ATTENTION_OP_NAME, scored_attention_reference
from onnx_tokprune.scoring import OP_DOMAIN, OP_VERSION

OPSET = 17
# (batch, sequence, heads, head size, normalizer): MiniLM's 12 x 32 included; None = the row's kept count
SHAPES = [
    (1, 1, 2, 4, None),
    (1, 7, 1, 8, 16.0),
    (2, 13, 4, 8, None),
    (3, 25, 12, 32, 128.0),
    (5, 40, 2, 16, None),
    (8, 9, 3, 4, 64.0),
    (1, 69, 12, 32, None),
]


def one_node_model(num_heads: int, head_dim: int, normalizer: float | None, function: bool) -> onnx.ModelProto:
    """A model holding one ScoredAttention node; with `function` the portable body is attached."""
    width = num_heads * head_dim
    inputs = [
        helper.make_tensor_value_info("qkv", TensorProto.FLOAT, ["B", "S", 3 * width]),
        helper.make_tensor_value_info("mask", TensorProto.INT64, ["B", "S"]),
    ]
    outputs = [
        helper.make_tensor_value_info("context", TensorProto.FLOAT, ["B", "S", width]),
        helper.make_tensor_value_info("score", TensorProto.FLOAT, ["B", "S"]),
    ]
    node = helper.make_node(
        ATTENTION_OP_NAME, ["qkv", "mask"], ["context", "score"], domain=OP_DOMAIN, num_heads=num_heads, normalizer=normalizer or 0.0
    )
    model = helper.make_model(
        helper.make_graph([node], "scored_attention_only", inputs, outputs),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(OP_DOMAIN, OP_VERSION)],
    )
    model.ir_version = 8
    if function:
        add_scored_attention_function(model, num_heads, head_dim, normalizer)
        onnx.checker.check_model(model, full_check=True)
    return model


def random_case(batch: int, seq: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """qkv with logits of a BERT's range, and a ragged 0/1 mask (every row keeps position 0)."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, seq, 3 * width, generator=gen) * 2.0
    lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
    lengths[0] = seq
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    if seq > 3:  # a hole inside a row, as TokenPrune leaves none but a caller may pass one
        mask[-1, seq // 2] = 0
    return qkv.numpy(), mask.numpy()


def reference(qkv: np.ndarray, mask: np.ndarray, heads: int, normalizer: float | None) -> tuple[np.ndarray, np.ndarray]:
    context, score = scored_attention_reference(torch.from_numpy(qkv), torch.from_numpy(mask), heads, normalizer)
    return context.numpy(), score.numpy()


@pytest.mark.parametrize("batch, seq, heads, head_dim, normalizer", SHAPES)
def test_kernel_function_and_reference_agree(kernel_library, batch, seq, heads, head_dim, normalizer):
    qkv, mask = random_case(batch, seq, heads * head_dim, seed=batch * 100 + seq)
    want_context, want_score = reference(qkv, mask, heads, normalizer)
    function = make_session(one_node_model(heads, head_dim, normalizer, function=True))
    runs = {"function": function.run(None, {"qkv": qkv, "mask": mask})}
    for threads in (1, 2):
        kernel = make_session(one_node_model(heads, head_dim, normalizer, function=False), kernel_library, intra_op_num_threads=threads)
        runs[f"kernel, {threads} threads"] = kernel.run(None, {"qkv": qkv, "mask": mask})
    for name, (context, score) in runs.items():
        np.testing.assert_allclose(context, want_context, rtol=1e-5, atol=1e-5, err_msg=name)  # |v| ~ 2-6: float32 sums
        np.testing.assert_allclose(score, want_score, rtol=1e-5, atol=1e-7, err_msg=name)
        # keys outside the mask receive exactly nothing
        assert (score[mask == 0] == 0).all(), name
    # the score is a distribution over kept keys: with the row's kept count as N it sums to 1 per row
    if normalizer is None:
        np.testing.assert_allclose(runs["kernel, 2 threads"][1].sum(axis=1), 1.0, rtol=1e-5)


def test_kernel_runs_the_node_and_reports_bad_shapes(kernel_library):
    # no function attached: only the kernel can run it; the width left symbolic so the kernel checks it
    model = one_node_model(4, 8, None, function=False)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "W"
    session = make_session(model, kernel_library)
    qkv, mask = random_case(2, 6, 32, seed=3)
    context, score = session.run(None, {"qkv": qkv, "mask": mask})
    assert context.shape == (2, 6, 32) and score.shape == (2, 6)
    with pytest.raises(Exception, match=r"tokprune::ScoredAttention: qkv's last dim \(90\) is not 3 \* num_heads \(4\)"):
        session.run(None, {"qkv": np.zeros((1, 3, 90), np.float32), "mask": np.ones((1, 3), np.int64)})
    with pytest.raises(Exception, match="tokprune::ScoredAttention: mask must be"):
        session.run(None, {"qkv": qkv, "mask": mask[:, :4]})
