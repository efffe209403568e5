"""Token survival for one sentence: the matrix matches the graph's kept_index outputs, the PNG is
written atomically, and `tokprune show` prints one line per pruning layer or one clear error."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SST2_SENTENCES, assert_one_line_error
from onnx_tokprune.cli import calibrate_command, export_command, main, show_command
from onnx_tokprune.data.text import TextExample
from onnx_tokprune.runtime import ArtifactError, open_artifact
from onnx_tokprune.artifact import original_positions
from onnx_tokprune.runtime.survival import DPI, MAX_WIDTH_IN, Survival, plot_survival, segment_survival, token_survival

pytest.importorskip("matplotlib")

SENTENCES = SST2_SENTENCES[:6]
TEXT = SENTENCES[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


def assert_exit_1_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert_one_line_error(result, *fragments)


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint, tmp_path_factory):
    data = tmp_path_factory.mktemp("data") / "sentences.txt"
    data.write_text("\n".join(SENTENCES) + "\n")
    out = tmp_path_factory.mktemp("cal") / "ckpt"
    result = run(calibrate_command, ["--model", tiny_checkpoint, "--data", data, "--keep", "0.5", "--output", out])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def artifact(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "art"
    result = run(export_command, ["--model", checkpoint, "--output", out])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def session(artifact):
    return open_artifact(artifact, threads=1)


@pytest.mark.parametrize("text, pair", [(TEXT, None), (SENTENCES[0], SENTENCES[3])])
def test_matrix_is_the_graphs_kept_positions(session, text, pair):
    survival = token_survival(session, text, pair)
    ids, _ = session.text_encoder.token_ids([TextExample(text, pair)])[0]
    assert survival.tokens == [session.text_encoder.tokenizer.id_to_token(i) for i in ids]
    assert survival.tokens[0] == "[CLS]" and survival.tokens[-1] == "[SEP]"
    assert survival.tokens.count("[SEP]") == (2 if pair else 1)
    assert survival.layers == [1, 2]
    assert survival.kept.shape == (2, len(ids)) and survival.kept.dtype == bool
    positions = original_positions(session.run(session.text_encoder([TextExample(text, pair)])))
    for row, layer in enumerate(survival.layers):
        expected = sorted(int(p) for p in positions[f"kept_index_{layer}"][0] if p >= 0)
        assert survival.kept_positions(row) == expected
    assert survival.label is not None and 0.5 <= survival.score <= 1


def test_cls_kept_rows_monotone_and_something_pruned(session):
    survival = token_survival(session, TEXT)
    assert survival.kept[:, 0].all()
    previous = np.ones(len(survival.tokens), dtype=bool)
    for row in survival.kept:
        assert not (row & ~previous).any(), "a removed token came back"
        previous = row
    counts = survival.counts()
    assert counts == sorted(counts, reverse=True) and counts[-1] < len(survival.tokens)


def test_lines_name_kept_tokens(session):
    survival = token_survival(session, TEXT)
    lines = survival.lines()
    n = len(survival.tokens)
    assert lines[0] == f"input ({n}/{n}): " + " ".join(survival.tokens)
    for line, layer, row in zip(lines[1:], survival.layers, survival.kept):
        assert line == f"L{layer} ({row.sum()}/{n}): " + " ".join(t for t, k in zip(survival.tokens, row) if k)


def test_png_written_atomically(session, tmp_path):
    survival = token_survival(session, TEXT, None)
    out = tmp_path / "sub" / "survival.png"
    assert plot_survival(survival, out, title="a title") == out
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in out.parent.iterdir()] == ["survival.png"]
    out.write_bytes(b"old")
    plot_survival(survival, out)
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_long_sentence_width_is_capped(tmp_path):
    import matplotlib.image

    n = 400
    kept = np.zeros((3, n), dtype=bool)
    kept[0, ::2] = kept[1, ::4] = kept[2, ::8] = True
    kept[:, 0] = True
    survival = Survival([f"tok{i}" for i in range(n)], [2, 4, 6], kept)
    out = plot_survival(survival, tmp_path / "long.png")
    height, width = matplotlib.image.imread(out).shape[:2]
    assert width <= MAX_WIDTH_IN * DPI + 1 and height < width


def test_unpruned_artifact_is_refused(checkpoint, tmp_path):
    baseline = tmp_path / "base"
    assert run(export_command, ["--model", checkpoint, "--output", baseline, "--unpruned"]).exit_code == 0
    with pytest.raises(ArtifactError, match="without pruning"):
        token_survival(open_artifact(baseline, threads=1), TEXT)
    assert_exit_1_one_line_error(
        run(show_command, ["--artifact", baseline, "--text", TEXT, "--png", tmp_path / "x.png"]), "without pruning"
    )
    assert not (tmp_path / "x.png").exists()


def test_cli_writes_png_and_prints_layers(artifact, tmp_path):
    out = tmp_path / "show.png"
    result = run(main, ["show", "--artifact", artifact, "--text", TEXT, "--png", out])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG_MAGIC)
    lines = result.output.splitlines()
    assert lines[0].startswith("input (")
    assert [line.split(" ", 1)[0] for line in lines if line.startswith("L")] == ["L1", "L2"]
    assert lines[-1].startswith(f"wrote {out}; predicted ")


def test_cli_pair(artifact, tmp_path):
    out = tmp_path / "pair.png"
    result = run(show_command, ["--artifact", artifact, "--text", SENTENCES[0], "--pair", SENTENCES[3], "--png", out])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].count("[SEP]") == 2 and out.is_file()


def test_cli_refuses_existing_png_without_force(artifact, tmp_path):
    out = tmp_path / "show.png"
    out.write_bytes(b"mine")
    assert_exit_1_one_line_error(run(show_command, ["--artifact", artifact, "--text", TEXT, "--png", out]), "--force")
    assert out.read_bytes() == b"mine"
    result = run(show_command, ["--artifact", artifact, "--text", TEXT, "--png", out, "--force"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_cli_missing_artifact(tmp_path):
    result = run(show_command, ["--artifact", tmp_path / "nope", "--text", TEXT, "--png", tmp_path / "x.png"])
    assert_exit_1_one_line_error(result, "nope not found")
    assert not (tmp_path / "x.png").exists()


def test_cli_text_too_long(artifact, tmp_path):
    result = run(show_command, ["--artifact", artifact, "--text", " ".join(["word"] * 100), "--png", tmp_path / "x.png"])
    assert_exit_1_one_line_error(result, "102 tokens", "64")


def test_cli_without_matplotlib(artifact, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "x.png"
    assert_exit_1_one_line_error(run(show_command, ["--artifact", artifact, "--text", TEXT, "--png", out]), "needs matplotlib")
    assert not out.exists() and not list(tmp_path.iterdir())


PAIRS = [(SENTENCES[i], SENTENCES[(i + 3) % len(SENTENCES)]) for i in range(len(SENTENCES))]


def test_segment_survival_counts_each_texts_tokens(session):
    summary = segment_survival(session, [TextExample(a, b) for a, b in PAIRS], progress=False)
    tokenizer = session.text_encoder.tokenizer
    tokens, kept = [0, 0], [[0, 0], [0, 0]]
    for a, b in PAIRS:
        # [CLS] a [SEP] b [SEP]: the texts' positions from their own lengths
        n_a, n_b = (len(tokenizer.encode(t, add_special_tokens=False).ids) for t in (a, b))
        spans = (slice(1, 1 + n_a), slice(2 + n_a, 2 + n_a + n_b))
        survival = token_survival(session, a, b)
        assert len(survival.tokens) == n_a + n_b + 3
        for s, span in enumerate(spans):
            tokens[s] += n_a if s == 0 else n_b
            for row in range(len(survival.layers)):
                kept[row][s] += int(survival.kept[row, span].sum())
    assert summary.layers == [1, 2] and summary.inputs == len(PAIRS)
    assert summary.tokens == tokens and summary.kept == kept
    for s in (0, 1):
        shares = [summary.share(row, s) for row in range(2)]
        assert 0 <= shares[1] <= shares[0] <= 1
    assert summary.kept[-1][0] + summary.kept[-1][1] < sum(tokens), "nothing pruned"


def test_segment_survival_lines_and_single_texts(session):
    summary = segment_survival(session, [TextExample(t) for t in SENTENCES], progress=False)
    assert summary.tokens[1] == 0 and summary.tokens[0] > 0
    lines = summary.lines()
    assert lines[0] == f"input ({len(SENTENCES)} inputs): first text {summary.tokens[0]} tokens"
    k, n = summary.kept[0][0], summary.tokens[0]
    assert lines[1] == f"L1: first text {100 * k / n:.1f}% ({k}/{n})"
    assert "second text" not in "\n".join(lines)
    assert summary.kept[0][1] == summary.kept[1][1] == 0 and np.isnan(summary.share(0, 1))


def test_cli_summary_over_pair_data(artifact, tmp_path):
    import csv

    data = tmp_path / "pairs.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows([("premise", "hypothesis"), *PAIRS])
    columns = ["--text-column", "premise", "--text-pair-column", "hypothesis"]
    out = tmp_path / "summary.png"
    result = run(show_command, ["--artifact", artifact, "--data", data, *columns, "--summary", "--png", out])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG_MAGIC)
    lines = result.output[result.output.index("input ("):].splitlines()  # after the progress bar (stderr, no newline here)
    expected = segment_survival(open_artifact(artifact, threads=1), [TextExample(a, b) for a, b in PAIRS], progress=False)
    assert lines[:3] == expected.lines() and lines[0].startswith(f"input ({len(PAIRS)} inputs): first text ")
    assert lines[3] == f"wrote {out}"
    for extra in (["--row", 1], ["--pair", "a hypothesis"]):
        assert_exit_1_one_line_error(
            run(show_command, ["--artifact", artifact, "--data", data, *columns, "--summary", "--png", tmp_path / "x.png", *extra]), "--summary")
    assert_exit_1_one_line_error(run(show_command, ["--artifact", artifact, "--text", TEXT, "--summary", "--png", tmp_path / "x.png"]), "--summary")
    assert not (tmp_path / "x.png").exists()


def test_sequence_ids_tell_the_texts_apart_where_type_ids_do_not():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from onnx_tokprune.runtime.text_encoder import TextEncoder

    tokenizer = Tokenizer(models.WordLevel({"<s>": 0, "</s>": 1, "<unk>": 2, "a": 3, "b": 4, "c": 5}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0))  # RoBERTa: every type id 0
    encoder = TextEncoder(tokenizer, 16)
    example = TextExample("a b c", "c a")
    ((ids, types),) = encoder.token_ids([example])
    assert set(types) == {0} and len(ids) == 9
    assert encoder.sequence_ids(example) == [None, 0, 0, 0, None, None, 1, 1, None]
    assert encoder.sequence_ids(TextExample("b c")) == [None, 0, 0, None]


def test_eval_protect_second_text_keeps_every_second_text_token(checkpoint, tmp_path):
    import csv
    import json

    from tokenizers import Tokenizer

    data = tmp_path / "pairs.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows([("premise", "hypothesis", "label"), *((a, b, i % 2) for i, (a, b) in enumerate(PAIRS))])
    args = ["--model", checkpoint, "--data", data, "--text-column", "premise", "--text-pair-column", "hypothesis",
            "--label-column", "label", "--modes", "drop"]
    plain, kept = tmp_path / "plain.json", tmp_path / "kept.json"
    assert run(main, ["eval", *args, "--json", plain]).exit_code == 0
    result = run(main, ["eval", *args, "--protect-second-text", "--json", kept])
    assert result.exit_code == 0, result.output
    (p,), (k,) = json.loads(plain.read_text()), json.loads(kept.read_text())
    assert p["source"] == "pytorch-drop" and k["source"] == "pytorch-drop second text kept"
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    second = np.mean([len(tokenizer.encode(b, add_special_tokens=False).ids) for _, b in PAIRS])
    assert set(k["kept_tokens"]) == set(p["kept_tokens"]) == {"1", "2"}
    for layer, mean_kept in k["kept_tokens"].items():
        assert mean_kept >= second + 1, "a second-text token (or [CLS]) was removed"
        assert mean_kept >= p["kept_tokens"][layer]
    assert k["kept_tokens"]["2"] > p["kept_tokens"]["2"] and k["relative_flops"] > p["relative_flops"]
    # per pair: every second-text position is still present after each pruning layer, and unprotected some are not
    import torch

    from onnx_tokprune.modeling import load_pruned
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    encoder, text_encoder = load_pruned(checkpoint, "drop"), TextEncoder.from_dir(checkpoint)
    lost = 0
    for a, b in PAIRS:
        example = TextExample(a, b)
        feeds = {name: torch.from_numpy(v) for name, v in text_encoder([example]).items()}
        second_mask = torch.tensor([[s == 1 for s in text_encoder.sequence_ids(example)]])
        with torch.no_grad():
            guarded = encoder(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"], protected=second_mask)
            bare = encoder(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"])
        for row in guarded.kept:
            assert bool(row[second_mask].all())
        lost += int((bare.kept[-1][second_mask] == 0).sum())
    assert lost > 0, "without protection the tiny model keeps every second-text token: the test shows nothing"


def test_eval_protect_second_text_refusals(checkpoint, artifact, tmp_path):
    single = tmp_path / "single.csv"
    single.write_text("sentence,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(SENTENCES) if "," not in t))
    out = tmp_path / "x.json"
    args = ["--data", single, "--text-column", "sentence", "--label-column", "label", "--protect-second-text", "--json", out]
    assert_exit_1_one_line_error(run(main, ["eval", "--model", checkpoint, *args]), "no second texts")
    result = run(main, ["eval", "--model", checkpoint, "--artifact", artifact, *args])
    assert result.exit_code != 0 and "--protect-second-text applies to a classifier checkpoint" in result.output
    assert not out.exists()
