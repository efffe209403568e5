"""The reliability list: every bad input to a console script ends in one `Error:` line, a non-zero
exit, no traceback, and nothing written where the output was to go."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from conftest import SST2_SENTENCES, assert_one_line_error
from onnx_tokprune.cli import bench_command, calibrate_command, eval_command, export_command, main, match_flops_command, parity_command, show_command
from onnx_tokprune.config import ConfigError, PruneConfig
from onnx_tokprune.data.text import DataError, read_texts

TOP_CONFIG = {
    "version": 1, "method": "top", "rule": "rank_bins", "score_normalizer": "length",
    "layers": [{"layer": 1, "bin_mask": [1, 1, 0, 1]}, {"layer": 2, "bin_mask": [1, 0, 1, 1]}],
    "provenance": {"target_flops": 0.7, "candidate_layers": [1, 2], "bin_log_alpha": [[1, 1, -1, 1], [1, -1, 1, 1]], "layer_log_alpha": [1, 1]},
}
"""A ToP-style tokprune.json, so that every command (match-flops included) gets as far as loading the weights."""


def run(command, args):
    return CliRunner().invoke(command, [a if isinstance(a, str) else str(a) for a in args])


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "sentences.txt"
    path.write_text("\n".join(SST2_SENTENCES) + "\n")
    return path


@pytest.fixture(scope="module")
def base_ckpt(tiny_checkpoint, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("base") / "ckpt"
    shutil.copytree(tiny_checkpoint, path)
    (path / "tokprune.json").write_text(json.dumps(TOP_CONFIG))
    return path


@pytest.fixture(scope="module")
def artifact(base_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("art") / "art"
    result = run(export_command, ["--model", base_ckpt, "--output", out])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def tokenizer_source(minilm_tokenizer):
    return minilm_tokenizer


def _tiny_config(**extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                      max_position_embeddings=64, **extra)


# --- 1. corrupt or incomplete checkpoints ------------------------------------------------------------


def _edit_config(path: Path, change) -> None:
    data = json.loads((path / "config.json").read_text())
    change(data)
    (path / "config.json").write_text(json.dumps(data))


def _truncate(path: Path) -> None:
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def _three_labels(data: dict) -> None:
    data["id2label"] = {"0": "a", "1": "b", "2": "c"}
    data["label2id"] = {"a": 0, "b": 1, "c": 2}


BROKEN = {
    "no weights": (lambda p: (p / "model.safetensors").unlink(), ["has no weights file"]),
    "truncated weights": (_truncate, ["model.safetensors is truncated or corrupt"]),
    "empty weights": (lambda p: (p / "model.safetensors").write_bytes(b""), ["model.safetensors is truncated or corrupt"]),
    "config not JSON": (lambda p: (p / "config.json").write_text("{not json"), ["config.json is not valid JSON"]),
    "config a JSON list": (lambda p: (p / "config.json").write_text("[1, 2]"), ["config.json must hold a JSON object"]),
    "no num_hidden_layers": (lambda p: _edit_config(p, lambda d: d.pop("num_hidden_layers")), ["num_hidden_layers is missing"]),
    "head mismatch": (lambda p: _edit_config(p, _three_labels), ["classifier head", "has 2 output(s)", "num_labels 3"]),
}


def damaged_copies(source: Path, damages: dict, root: Path) -> dict[str, Path]:
    """One copy of `source` per entry of `damages` ({kind: (damage(path), fragments)}), each damaged."""
    paths = {}
    for i, (kind, (damage, _)) in enumerate(damages.items()):
        paths[kind] = root / f"copy{i}"
        shutil.copytree(source, paths[kind])
        damage(paths[kind])
    return paths


@pytest.fixture(scope="module")
def broken(base_ckpt, tmp_path_factory) -> dict[str, Path]:
    return damaged_copies(base_ckpt, BROKEN, tmp_path_factory.mktemp("broken"))


def _command(name: str, model: Path | str, out: Path, texts: Path, artifact: Path) -> tuple[click.Command, list]:
    """(command, args) of `name` on checkpoint `model`, writing to `out` (a directory or a report file)."""
    train = ["--task", "sst2", "--output", out, "--data-dir", out.parent / "no-glue"]
    return {
        "calibrate": (calibrate_command, ["--model", model, "--data", texts, "--keep", "0.5", "--output", out]),
        "export": (export_command, ["--model", model, "--output", out]),
        "parity": (parity_command, ["--model", model, "--artifact", artifact, "--data", texts, "--report", out]),
        "finetune": (main, ["train", "finetune", "--model", model, *train]),
        "ltp": (main, ["train", "ltp", "--model", model, *train]),
        "top": (main, ["train", "top", "--model", model, *train]),
        "match-flops": (match_flops_command, ["--model", model, "--data", texts, "--output", out]),
        "eval": (eval_command, ["--model", model, "--task", "sst2", "--data-dir", out.parent / "no-glue", "--json", out]),
    }[name]


COMMANDS = ("calibrate", "export", "parity", "finetune", "ltp", "top", "match-flops", "eval")


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_checkpoints_give_one_line_everywhere(kind, broken, texts, artifact, tmp_path):
    fragments = BROKEN[kind][1]
    for name in COMMANDS:
        if name == "finetune" and kind == "head mismatch":
            continue  # fine-tuning puts a new head of the task's size on any checkpoint
        out = tmp_path / name
        command, args = _command(name, broken[kind], out, texts, artifact)
        assert_one_line_error(run(command, args), *fragments)
        assert not out.exists(), name


def test_missing_model_dir_is_not_found_and_hub_names_still_go_to_the_hub(tmp_path, texts, monkeypatch):
    import huggingface_hub.constants

    missing = tmp_path / "no-such-checkpoint"
    for name in ("calibrate", "finetune"):
        out = tmp_path / name
        command, args = _command(name, missing, out, texts, tmp_path)
        assert_one_line_error(run(command, args), f"{missing} not found")
        assert not out.exists()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    command, args = _command("finetune", "no-such-org/no-such-model", tmp_path / "ft", texts, tmp_path)
    assert_one_line_error(run(command, args), "no-such-org/no-such-model is not a local directory", "Hugging Face hub")


def test_unsupported_model_type_refused_by_finetune(tmp_path, texts):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2}))
    command, args = _command("finetune", gpt2, tmp_path / "ft", texts, tmp_path)
    assert_one_line_error(run(command, args), "'gpt2' is not supported", "albert, bert, distilbert, electra, roberta, xlm-roberta")
    assert not (tmp_path / "ft").exists()


def test_num_labels_must_be_positive(tiny_checkpoint, texts, tmp_path):
    for value in ("0", "-2"):
        result = run(calibrate_command, ["--model", tiny_checkpoint, "--data", texts, "--keep", "0.5", "--output", tmp_path / "c", "--num-labels", value])
        assert_one_line_error(result, "--num-labels", "at least 1")
    assert not (tmp_path / "c").exists()


def test_checkpoint_without_tokenizer_files_is_refused(texts, tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    bare = tmp_path / "no-tokenizer"
    BertForSequenceClassification(_tiny_config(num_labels=2)).save_pretrained(bare)
    result = run(calibrate_command, ["--model", bare, "--data", texts, "--keep", "0.5", "--output", tmp_path / "c"])
    assert_one_line_error(result, f"{bare} has no tokenizer files", "tokenizer.json", "vocab.txt")
    assert not (tmp_path / "c").exists()


# --- 2. unsupported heads ----------------------------------------------------------------------------


def test_unsupported_heads_are_refused(tokenizer_source, texts, tmp_path):
    """A token classifier has no head PrunedEncoder runs; a QA model runs in calibrate, export, parity,
    eval, LTP and ToP but not in the classification fine-tuning (finetune-qa trains it)."""
    from transformers import BertForQuestionAnswering, BertForTokenClassification

    torch.manual_seed(0)
    cases = {"tagger": (BertForTokenClassification, ("calibrate", "export", "finetune", "ltp", "parity")),
             "qa": (BertForQuestionAnswering, ("finetune",))}
    for folder, (model_class, commands) in cases.items():
        checkpoint = tmp_path / folder
        model_class(_tiny_config()).save_pretrained(checkpoint)
        tokenizer_source.save_pretrained(checkpoint)
        (checkpoint / "tokprune.json").write_text(json.dumps(TOP_CONFIG))
        for name in commands:
            out = tmp_path / f"{folder}-{name}"
            command, args = _command(name, checkpoint, out, texts, tmp_path)
            assert_one_line_error(run(command, args), f"{model_class.__name__} checkpoints are not supported", "ForSequenceClassification")
            assert not out.exists()


def test_bare_and_pretraining_checkpoints_get_a_new_head_only_where_allowed(tmp_path):
    from transformers import BertForMaskedLM, BertModel

    from onnx_tokprune.modeling import CheckpointError, load_classifier

    torch.manual_seed(0)
    BertModel(_tiny_config()).save_pretrained(tmp_path / "bare")
    BertForMaskedLM(_tiny_config()).save_pretrained(tmp_path / "mlm")
    assert load_classifier(tmp_path / "bare", "if_missing", num_labels=3).config.num_labels == 3
    assert load_classifier(tmp_path / "mlm", "new", num_labels=2).config.num_labels == 2
    with pytest.raises(CheckpointError, match="bare encoder .BertModel. without a classification head"):
        load_classifier(tmp_path / "bare")
    with pytest.raises(CheckpointError, match="BertForMaskedLM checkpoints are not supported"):
        load_classifier(tmp_path / "mlm", "if_missing", num_labels=2)


# --- 3. data files -----------------------------------------------------------------------------------


BAD_DATA = {
    "latin1.txt": ("caf\xe9 cr\xe8me\n".encode("latin-1"), "is not UTF-8"),
    "binary.bin": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL byte"),
    "nul.txt": (b"a fine film\nanother\x00one\n", "NUL byte"),
    "empty_texts.tsv": (b"sentence\tlabel\n\t1\n   \t0\n", "line 2 has an empty text"),
    "headerless.tsv": (b"a gorgeous movie\t1\nslow\t0\n", "give the file a header row naming the text column `sentence`"),
    "short_rows.tsv": (b"sentence1\tsentence2\tlabel\na\tb\t1\nc\n", "line 3 has 1 tab-separated column(s)"),
}


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_data")
    for name, (data, _) in BAD_DATA.items():
        (root / name).write_bytes(data)
    return {name: root / name for name in BAD_DATA}


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_bad_data_files(name, bad_data, tiny_checkpoint, tmp_path):
    with pytest.raises(DataError, match=BAD_DATA[name][1].replace("(", r"\(").replace(")", r"\)")):
        read_texts(bad_data[name])
    result = run(calibrate_command, ["--model", tiny_checkpoint, "--data", bad_data[name], "--keep", "0.5", "--output", tmp_path / "c"])
    assert_one_line_error(result, BAD_DATA[name][1])
    assert not (tmp_path / "c").exists()


def test_bad_data_in_parity_bench_and_match_flops(bad_data, base_ckpt, artifact, tmp_path):
    data = bad_data["headerless.tsv"]
    assert_one_line_error(run(parity_command, ["--model", base_ckpt, "--artifact", artifact, "--data", data]), "header row")
    assert_one_line_error(run(bench_command, ["--artifact", artifact, "--data", data, "--output", tmp_path / "b"]), "header row")
    assert_one_line_error(run(match_flops_command, ["--model", base_ckpt, "--data", bad_data["latin1.txt"], "--output", tmp_path / "m"]), "is not UTF-8")
    assert not (tmp_path / "b").exists() and not (tmp_path / "m").exists()


def test_good_layouts_still_read(tmp_path):
    files = {
        "plain.txt": ("one text\n\nanother text\n", ["one text", "another text"]),
        "sst2.tsv": ("sentence\tlabel\ngood\t1\nbad\t0\n", ["good", "bad"]),
        "cola.tsv": ("gj04\t1\t\tThe sailors rode.\ngj04\t0\t*\tRode the.\n", ["The sailors rode.", "Rode the."]),
        "bom.tsv": ("\ufeff#1 String\t#2 String\tQuality\na\tb\t1\n", ["a"]),
    }
    for name, (content, expected) in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        assert [e.text for e in read_texts(tmp_path / name)] == expected, name
    assert read_texts(tmp_path / "bom.tsv")[0].text_pair == "b"


# --- 4. tokprune.json types and bounds ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"provenance": 3}, "provenance must be a JSON object"),
        ({"provenance": "calibrated"}, "provenance must be a JSON object"),
        ({"rule": ["rank_bins"]}, "rule must be a string"),
        ({"rule": {"rank_bins": 1}}, "rule must be a string"),
        ({"method": 7}, "method must be a string"),
        ({"score_normalizer": None}, "score_normalizer must be a string"),
        ({"version": "1"}, "version must be the integer 1"),
        ({"version": True}, "version must be the integer 1"),
    ],
)
def test_tokprune_json_wrong_types(change, fragment):
    with pytest.raises(ConfigError, match=fragment):
        PruneConfig.from_json({**TOP_CONFIG, **change})


def test_thresholds_no_score_can_reach(base_ckpt, tmp_path):
    length = {**TOP_CONFIG, "rule": "threshold", "method": "ltp", "layers": [{"layer": 1, "threshold": 2.0}]}
    with pytest.raises(ConfigError, match="at most 1"):
        PruneConfig.from_json(length)
    PruneConfig.from_json({**length, "layers": [{"layer": 1, "threshold": 1.0}]})
    ckpt = tmp_path / "ckpt"
    shutil.copytree(base_ckpt, ckpt)
    fixed = {**length, "score_normalizer": "fixed", "normalizer_length": 128, "layers": [{"layer": 1, "threshold": 1e30}]}
    (ckpt / "tokprune.json").write_text(json.dumps(fixed))
    # the tiny checkpoint has 64 positions: a score is at most 64/128
    assert_one_line_error(run(export_command, ["--model", ckpt, "--output", tmp_path / "a"]), "threshold 1e+30 can never be reached", "0.5")
    assert not (tmp_path / "a").exists()
    (ckpt / "tokprune.json").write_text(json.dumps({**TOP_CONFIG, "rule": ["rank_bins"]}))
    assert_one_line_error(run(export_command, ["--model", ckpt, "--output", tmp_path / "a"]), "rule must be a string")


# --- 5. artifacts ------------------------------------------------------------------------------------


def _foreign_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _truncate_onnx(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


BROKEN_ARTIFACTS = {
    "truncated model.onnx": (lambda a: _truncate_onnx(a / "model.onnx"), ["model.onnx cannot be loaded", "re-export it"]),
    "foreign graph": (lambda a: _foreign_model(a / "model.onnx"), ["is not a tokprune graph", "logits"]),
    "no manifest": (lambda a: (a / "tokprune_manifest.json").unlink(), ["has no tokprune_manifest.json"]),
    "no tokenizer": (lambda a: (a / "tokenizer.json").unlink(), ["has no tokenizer.json"]),
}


@pytest.fixture(scope="module")
def broken_artifacts(artifact, tmp_path_factory) -> dict[str, Path]:
    return damaged_copies(artifact, BROKEN_ARTIFACTS, tmp_path_factory.mktemp("broken_art"))


@pytest.mark.parametrize("kind", list(BROKEN_ARTIFACTS))
def test_broken_artifacts(kind, broken_artifacts, base_ckpt, texts, tmp_path):
    from onnx_tokprune.runtime import ArtifactError, open_artifact

    art, fragments = broken_artifacts[kind], BROKEN_ARTIFACTS[kind][1]
    with pytest.raises(ArtifactError, match=fragments[0]):
        open_artifact(art)
    calls = {
        "parity": (parity_command, ["--model", base_ckpt, "--artifact", art, "--data", texts, "--report", tmp_path / "r.json"], tmp_path / "r.json"),
        "bench": (bench_command, ["--artifact", art, "--data", texts, "--model", base_ckpt, "--output", tmp_path / "b"], tmp_path / "b"),
        "show": (show_command, ["--artifact", art, "--text", "a fine film", "--png", tmp_path / "s.png"], tmp_path / "s.png"),
        "eval": (eval_command, ["--model", art, "--task", "sst2", "--data-dir", tmp_path / "glue", "--json", tmp_path / "e.json"], tmp_path / "e.json"),
        "eval --artifact": (eval_command, ["--model", base_ckpt, "--artifact", art, "--task", "sst2", "--data-dir", tmp_path / "glue"], None),
    }
    for name, (command, args, out) in calls.items():
        assert_one_line_error(run(command, args), *fragments)
        assert out is None or not out.exists(), name


# --- 6. options --------------------------------------------------------------------------------------


def test_batch_sizes_and_samples(base_ckpt, artifact, texts, tiny_checkpoint, tmp_path):
    parity = ["--model", base_ckpt, "--artifact", artifact, "--data", texts]
    for value in ("0", "-1", "a,b", "", "1,,8"):
        assert_one_line_error(run(parity_command, [*parity, "--batch-sizes", value]), "--batch-sizes")
    assert_one_line_error(run(parity_command, [*parity, "--samples", "-3"]), "--samples", "at least 0")
    for value in ("0", "-5"):
        result = run(calibrate_command, ["--model", tiny_checkpoint, "--data", texts, "--keep", "0.5", "--output", tmp_path / "c", "--samples", value])
        assert_one_line_error(result, "--samples", "at least 1")
        assert_one_line_error(run(match_flops_command, ["--model", base_ckpt, "--data", texts, "--output", tmp_path / "m", "--samples", value]), "--samples")
        assert_one_line_error(run(bench_command, ["--artifact", artifact, "--data", texts, "--output", tmp_path / "b", "--samples", value]), "--samples")
    assert not [p for p in tmp_path.iterdir()]


def test_duplicate_layers_modes_and_surrogates(tiny_checkpoint, base_ckpt, artifact, texts, tmp_path):
    result = run(calibrate_command, ["--model", tiny_checkpoint, "--data", texts, "--keep", "0.5", "--output", tmp_path / "c", "--layers", "1,1"])
    assert_one_line_error(result, "--layers", "more than once")
    result = run(main, ["train", "top", "--model", base_ckpt, "--task", "sst2", "--output", tmp_path / "t", "--layers", "1,2,1"])
    assert_one_line_error(result, "--layers", "more than once")
    result = run(eval_command, ["--model", base_ckpt, "--task", "sst2", "--modes", "foo"])
    assert_one_line_error(result, "--modes", "drop, mask")
    result = run(show_command, ["--artifact", artifact, "--text", "caf\udce9", "--png", tmp_path / "s.png"])
    assert_one_line_error(result, "--text", "not valid Unicode")
    assert not [p for p in tmp_path.iterdir()]


def test_outputs_under_an_existing_file(tiny_checkpoint, base_ckpt, artifact, texts, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    under = blocker / "sub"
    calls = [
        (parity_command, ["--model", base_ckpt, "--artifact", artifact, "--data", texts, "--report", under / "r.json"]),
        (eval_command, ["--model", artifact, "--task", "sst2", "--json", under / "e.json"]),
        (calibrate_command, ["--model", tiny_checkpoint, "--data", texts, "--keep", "0.5", "--output", under]),
        (export_command, ["--model", base_ckpt, "--output", under]),
        (bench_command, ["--artifact", artifact, "--data", texts, "--output", under]),
        (show_command, ["--artifact", artifact, "--text", "a fine film", "--png", under / "s.png"]),
    ]
    for command, args in calls:
        assert_one_line_error(run(command, args), "a-file is a file, not a directory")
    assert blocker.read_text() == "mine"


# --- 7. without matplotlib ---------------------------------------------------------------------------


def _no_matplotlib(monkeypatch) -> None:
    for name in ("matplotlib", "matplotlib.pyplot", "matplotlib.figure", "matplotlib.colors", "matplotlib.patches"):
        monkeypatch.setitem(sys.modules, name, None)


def _fake_report(artifact: Path):
    from onnx_tokprune.bench.suite import VARIANTS, BenchReport, DataResult, VariantResult

    variants = [VariantResult(v, 1.0, 1.2, 1.0, 100.0, 1.0, 1.0, 0.5) for v in VARIANTS]
    return BenchReport(str(artifact), "ckpt", 1, 1, "cpu", [], "ort", "torch", "function", [DataResult("data", 10, 12.0, variants)])


def test_bench_without_matplotlib_writes_json_and_md(artifact, texts, tmp_path, monkeypatch):
    import onnx_tokprune.bench.suite as bench_suite

    seen = {}

    def fake_run_bench(*args, **kwargs):
        seen["kernel_library"] = args[6] if len(args) > 6 else kwargs.get("kernel_library")
        return _fake_report(artifact)

    monkeypatch.setattr(bench_suite, "run_bench", fake_run_bench)
    _no_matplotlib(monkeypatch)
    out = tmp_path / "bench"
    result = run(bench_command, ["--artifact", artifact, "--data", texts, "--output", out, "--no-kernel"])
    assert result.exit_code == 0, result.output
    assert seen["kernel_library"] is False
    assert (out / "bench.json").is_file() and (out / "bench.md").is_file() and not (out / "bench.png").exists()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install matplotlib" in lines[0], result.stderr


def test_show_without_matplotlib(artifact, tmp_path, monkeypatch):
    _no_matplotlib(monkeypatch)
    result = run(show_command, ["--artifact", artifact, "--text", "a fine film", "--png", tmp_path / "s.png"])
    assert_one_line_error(result, "matplotlib")
    assert not (tmp_path / "s.png").exists()


# --- 8. --kernel / --no-kernel -----------------------------------------------------------------------


def test_no_kernel_parity_uses_the_portable_functions(base_ckpt, artifact, texts, monkeypatch):
    import onnx_tokprune.runtime.session as session_module

    opened = []
    original = session_module.PrunedSession.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(session_module.PrunedSession, "__init__", spy)
    result = run(parity_command, ["--model", base_ckpt, "--artifact", artifact, "--data", texts, "--batch-sizes", "1,4", "--no-kernel"])
    assert result.exit_code == 0, result.output
    assert "parity OK on 10 sentences" in result.output
    assert len(opened) == 1 and opened[0].kernel_library is None


def test_kernel_when_none_is_built(artifact, base_ckpt, texts, tmp_path, monkeypatch):
    import onnx_tokprune.runtime.kernel as kernel

    monkeypatch.setattr(kernel, "find_kernel", lambda: None)
    calls = [
        (parity_command, ["--model", base_ckpt, "--artifact", artifact, "--data", texts, "--kernel"]),
        (show_command, ["--artifact", artifact, "--text", "a fine film", "--png", tmp_path / "s.png", "--kernel"]),
        (bench_command, ["--artifact", artifact, "--data", texts, "--output", tmp_path / "b", "--kernel"]),
        (eval_command, ["--model", artifact, "--task", "sst2", "--kernel"]),
    ]
    for command, args in calls:
        assert_one_line_error(run(command, args), "--kernel", "tokprune build-kernel")
    assert not [p for p in tmp_path.iterdir()]
