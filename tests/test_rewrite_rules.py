"""The rewrite rule (EmbedLayerNormFusion) fires where it should, refuses with its reason everywhere
else (one case per refusal), and the fusion contract refuses graphs that fell short."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from conftest import ragged_batch
from onnx_tokprune.config import LayerRule, PruneConfig
from onnx_tokprune.errors import PassError
from onnx_tokprune.export.exporter import to_onnx
from onnx_tokprune.export.passes import (
    EmbedLayerNormFusion,
    EmbedLayerNormFusionNoTypes,
    check_fusions,
    embed_layer_norm_fusion,
    ort_transformer_fusions,
    refusals,
)
from onnx_tokprune.modeling import wrap

VOCAB = 100


@pytest.fixture(scope="module")
def bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, initializer_range=0.2)
    return BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def layer0_graph(bert):
    """A graph pruning at layer 0 after onnxruntime's fusions: the embeddings are left for the rule."""
    encoder = wrap(bert, PruneConfig(rule="top_k", layers=(LayerRule(0, keep_ratio=0.5),)))
    fused, _ = ort_transformer_fusions(to_onnx(encoder, 17), bert.config)
    return encoder, fused


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _producer(model, name):
    return next(n for n in model.graph.node if name in n.output)


def _position_gather(model):
    return next(n for n in model.graph.node if n.op_type == "Gather" and "position_embeddings" in n.input[0])


def _insert_identity(model, consumer, index, after=None):
    """Route `consumer`'s input `index` through an Identity node (placed after node `after`, or first)."""
    source = consumer.input[index]
    node = helper.make_node("Identity", [source], [f"{source}_routed"])
    consumer.input[index] = node.output[0]
    nodes = list(model.graph.node)
    position = 0 if after is None else nodes.index(after) + 1
    model.graph.ClearField("node")
    model.graph.node.extend(nodes[:position] + [node] + nodes[position:])


def _type_ids_not_an_input(model):
    gather = next(n for n in model.graph.node if n.op_type == "Gather" and n.input[1] == "token_type_ids")
    _insert_identity(model, gather, 1)


def _table_not_constant(model):
    init = next(i for i in model.graph.initializer if "word_embeddings" in i.name)
    model.graph.initializer.remove(init)
    model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))


def _layer_norm_axis(model):
    norm = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    norm.attribute.append(helper.make_attribute("axis", 1))


def _positions_not_a_slice(model):
    gather = _position_gather(model)
    _insert_identity(model, gather, 1, after=_producer(model, gather.input[1]))


def _positions_shifted(model):
    table = _producer(model, _producer(model, _position_gather(model).input[1]).input[0])
    values = numpy_helper.to_array(table.attribute[0].t)
    table.attribute[0].t.CopyFrom(numpy_helper.from_array(values + 2))  # RoBERTa-style: counted from 2


REFUSALS = {
    "input_ids and token_type_ids must be graph inputs": _type_ids_not_an_input,
    "embedding tables, gamma and beta must be constants": _table_not_constant,
    "LayerNormalization must normalise the last axis": _layer_norm_axis,
    "position ids must be a Slice of a constant table": _positions_not_a_slice,
    "position ids must be 0..S-1": _positions_shifted,
}


@pytest.mark.parametrize("graph_fixture, rule", [("layer0_graph", EmbedLayerNormFusion), ("distilbert_graph", EmbedLayerNormFusionNoTypes)])
def test_the_rule_fires_once_on_scoring_layer_0_and_keeps_parity(request, graph_fixture, rule):
    """BERT's embeddings (word + type + position) and DistilBERT's (word + position), layer 0 scoring."""
    encoder, graph = request.getfixturevalue(graph_fixture)
    assert refusals(rule.rule(), graph) == ()
    fused, record = embed_layer_norm_fusion(graph)
    assert record.counts == {"EmbedLayerNormalization": 1} and record.refused == ()
    assert sum(n.op_type == "EmbedLayerNormalization" for n in fused.graph.node) == 1
    assert not any(n.op_type == "LayerNormalization" for n in fused.graph.node)
    batch = ragged_batch([9, 4, 13], seed=2, vocab_size=VOCAB)
    session = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    feeds = {name: t.numpy() for name, t in zip(("input_ids", "attention_mask", "token_type_ids"), batch) if name in inputs}
    with torch.no_grad():
        want = encoder(*batch).logits.numpy()
    np.testing.assert_allclose(session.run(["logits"], feeds)[0], want, atol=1e-5)


def test_no_near_match_no_reason(bert):
    """Layer 0 plain: onnxruntime fused the embeddings itself, so the pattern is absent (not refused)."""
    encoder = wrap(bert, PruneConfig(rule="top_k", layers=(LayerRule(1, keep_ratio=0.5),)))
    fused, _ = ort_transformer_fusions(to_onnx(encoder, 17), bert.config)
    _, record = embed_layer_norm_fusion(fused)
    assert record.counts == {} and record.refused == () and record.describe() == "did not fire"


def test_the_fusion_contract_names_what_fell_short(bert, layer0_graph):
    encoder, graph = layer0_graph
    fused, _ = embed_layer_norm_fusion(graph)
    assert check_fusions(fused, bert.config, (0,)) == {
        "Attention": 1, "SkipLayerNormalization": 4, "BiasGelu": 2, "EmbedLayerNormalization": 1, "ScoredAttention": 1,
    }
    with pytest.raises(PassError, match=r"holds 0 EmbedLayerNormalization node\(s\) where bert's fusion contract expects 1"):
        check_fusions(graph, bert.config, (0,))  # before the rule: the embeddings are not fused
    with pytest.raises(PassError, match=r"holds 1 Attention node\(s\) where bert's fusion contract expects 2"):
        check_fusions(fused, bert.config, ())  # claimed unpruned, but layer 0 is a ScoredAttention
    plain = to_onnx(encoder, 17)
    with pytest.raises(PassError, match="holds 0 Attention"):
        check_fusions(plain, bert.config, (0,))


@pytest.fixture(scope="module")
def distilbert_graph():
    """DistilBERT pruning at layer 0 after onnxruntime's fusions: embeddings without token types."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, initializer_range=0.2)
    model = DistilBertForSequenceClassification(config).eval()
    encoder = wrap(model, PruneConfig(rule="top_k", layers=(LayerRule(0, keep_ratio=0.5),)))
    fused, _ = ort_transformer_fusions(to_onnx(encoder, 17), model.config)
    return encoder, fused


def _ids_not_an_input(model):
    gather = next(n for n in model.graph.node if n.op_type == "Gather" and n.input[1] == "input_ids")
    _insert_identity(model, gather, 1)


NO_TYPES_REFUSALS = {
    "input_ids must be a graph input": _ids_not_an_input,
    "embedding tables, gamma and beta must be constants": _table_not_constant,
    "LayerNormalization must normalise the last axis": _layer_norm_axis,
    "position ids must be a Slice of a constant table": _positions_not_a_slice,
    "position ids must be 0..S-1": _positions_shifted,
}


CASES = [("layer0_graph", reason, damage) for reason, damage in REFUSALS.items()]
CASES += [("distilbert_graph", reason, damage) for reason, damage in NO_TYPES_REFUSALS.items()]


@pytest.mark.parametrize("graph_fixture, reason, damage", CASES, ids=[f"{g.split('_')[0]}: {r}" for g, r, _ in CASES])
def test_the_rule_refuses_and_says_why(request, graph_fixture, reason, damage):
    """One case per refusal reason of each embedding rule: the graph keeps its nodes, the record the reason."""
    _, graph = request.getfixturevalue(graph_fixture)
    broken = _copy(graph)
    damage(broken)
    fused, record = embed_layer_norm_fusion(broken)
    assert record.counts == {} and record.refused == (reason,)
    assert record.describe() == f"did not fire ({reason})"
    assert not any(n.op_type == "EmbedLayerNormalization" for n in fused.graph.node)
