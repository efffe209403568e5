"""GLUE data layer on the real shared files, and the metrics on hand-computed examples."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from conftest import glue_dir
from onnx_tokprune.data.glue import TASKS, TaskError, get_task, load_split, tokenize_split
from onnx_tokprune.data.metrics import compute_metrics, main_metric
from onnx_tokprune.data.text import DataError, read_texts

GLUE = glue_dir()
if GLUE is None:
    pytest.skip("needs the shared GLUE files (../shared/data/glue or $TOKPRUNE_DATA)", allow_module_level=True)
PARQUET = GLUE.parent / "glue_hf_parquet"
NEEDS_PARQUET = pytest.mark.skipif(not PARQUET.is_dir(), reason=f"needs the HF parquet copies in {PARQUET}")


def write_tsv(root: Path, glue_name: str, split_file: str, lines: list[str]) -> Path:
    path = root / glue_name / split_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return root


def hf_validation(config: str):
    import pandas as pd

    return pd.read_parquet(PARQUET / config / "validation.parquet")


# --- real files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, rows, counts",
    [
        ("sst2", 872, {0: 428, 1: 444}),
        ("rte", 277, {0: 146, 1: 131}),
        ("mrpc", 408, {0: 129, 1: 279}),
        ("cola", 1043, {0: 322, 1: 721}),
    ],
)
def test_dev_rows_and_label_balance(task, rows, counts):
    dev = load_split(task, "dev", GLUE)
    assert len(dev) == rows
    assert dict(Counter(dev["label"])) == counts
    assert dev.features["label"].dtype == "int64"
    expected = {"text_a", "text_b", "label"} if get_task(task).is_pair else {"text_a", "label"}
    assert set(dev.column_names) == expected
    assert all(isinstance(t, str) and t for c in expected - {"label"} for t in dev[c])


def test_stsb_dev_scores_are_floats_in_range():
    dev = load_split("stsb", "dev", GLUE)
    scores = np.asarray(dev["label"])
    assert len(dev) == 1500 and scores.dtype.kind == "f"
    assert scores.min() >= 0.0 and scores.max() <= 5.0
    assert len(np.unique(scores)) > 20 and np.any(scores != np.round(scores))


@NEEDS_PARQUET
@pytest.mark.parametrize("task", ["rte", "mrpc", "stsb", "cola", "sst2", "qnli"])
def test_dev_equals_hf_parquet(task):
    spec = get_task(task)
    dev = load_split(task, "dev", GLUE)
    ref = hf_validation(task)
    first, second = spec.hf_text_columns
    assert dev["text_a"] == ref[first].tolist()
    if second is not None:
        assert dev["text_b"] == ref[second].tolist()
    if spec.is_regression:
        np.testing.assert_array_equal(np.asarray(dev["label"], dtype=np.float32), ref["label"].to_numpy())
    else:
        assert dev["label"] == ref["label"].tolist()


@NEEDS_PARQUET
@pytest.mark.parametrize("task", ["cola", "sst2", "mrpc", "qnli", "rte"])
def test_label_names_match_hf_class_labels(task):
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(PARQUET / task / "validation.parquet").metadata[b"huggingface"])
    assert tuple(meta["info"]["features"]["label"]["names"]) == get_task(task).label_names


@NEEDS_PARQUET
def test_hub_path_renames_and_casts(monkeypatch):
    """data_dir=None goes through datasets.load_dataset("glue", task); here it is fed the parquet copy."""
    import datasets
    import pyarrow.parquet as pq

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return datasets.Dataset(pq.read_table(PARQUET / name / "validation.parquet"))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = load_split("RTE", "validation", None)
    local = load_split("rte", "dev", GLUE)
    assert calls == [("glue", "rte", "validation")]
    assert hub.features == local.features
    assert hub.to_dict() == local.to_dict()


def test_validation_is_an_alias_of_dev():
    assert load_split("rte", "validation", GLUE).to_dict() == load_split("rte", "dev", GLUE).to_dict()


def test_max_samples_is_a_seeded_subset():
    full = load_split("sst2", "dev", GLUE)
    a = load_split("sst2", "dev", GLUE, max_samples=100, seed=3)
    b = load_split("sst2", "dev", GLUE, max_samples=100, seed=3)
    c = load_split("sst2", "dev", GLUE, max_samples=100, seed=4)
    assert len(a) == 100
    assert a.to_dict() == b.to_dict()
    assert a["text_a"] != c["text_a"]
    assert a["text_a"] != full["text_a"][:100]
    pairs = set(zip(full["text_a"], full["label"]))
    assert set(zip(a["text_a"], a["label"])) <= pairs
    assert len(set(a["text_a"])) == 100


def test_max_samples_not_smaller_than_split_keeps_everything_in_order():
    full = load_split("rte", "dev", GLUE)
    assert load_split("rte", "dev", GLUE, max_samples=277).to_dict() == full.to_dict()
    assert load_split("rte", "dev", GLUE, max_samples=10_000).to_dict() == full.to_dict()
    with pytest.raises(DataError, match="max_samples"):
        load_split("rte", "dev", GLUE, max_samples=0)


def test_text_reader_still_reads_glue_files():
    assert len(read_texts(GLUE / "MRPC" / "dev.tsv")) == 408
    assert read_texts(GLUE / "CoLA" / "dev.tsv", limit=3)[0].text_pair is None


# --- task names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias, name",
    [("SST-2", "sst2"), ("sst-2", "sst2"), ("sst2", "sst2"), ("STS-B", "stsb"), ("CoLA", "cola"), ("MNLI", "mnli"), ("qnli", "qnli")],
)
def test_aliases(alias, name):
    assert get_task(alias) is TASKS[name]


def test_alias_loads_the_same_split():
    assert load_split("SST-2", "dev", GLUE).to_dict() == load_split("sst2", "dev", GLUE).to_dict()


def test_registry_and_main_metrics():
    assert set(TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"}
    expected = {"cola": "matthews_correlation", "mrpc": "f1", "qqp": "f1", "stsb": "pearson"}
    for name, spec in TASKS.items():
        assert main_metric(name) == spec.main_metric == expected.get(name, "accuracy")
        assert spec.metrics[0] == spec.main_metric
    assert get_task("stsb").num_labels == 1 and get_task("mnli").num_labels == 3
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("rte").label_names == ("entailment", "not_entailment")


def test_unknown_task_lists_known_tasks():
    with pytest.raises(TaskError) as info:
        get_task("sst5")
    message = str(info.value)
    assert "sst5" in message and "\n" not in message
    assert all(name in message for name in TASKS)
    assert isinstance(info.value, ValueError)
    with pytest.raises(TaskError):
        load_split("wnli", "dev", GLUE)


def test_unknown_split():
    with pytest.raises(DataError, match="'test'"):
        load_split("rte", "test", GLUE)


# --- malformed files (small files in tmp_path) -------------------------------------------------------


def test_missing_file_names_path_and_data_dir(tmp_path):
    with pytest.raises(DataError) as info:
        load_split("rte", "dev", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "RTE" / "dev.tsv") in message and "--data-dir" in message


def test_missing_column_is_named(tmp_path):
    write_tsv(tmp_path, "RTE", "dev.tsv", ["index\tsentence1\tlabel", "0\tA man sleeps.\tentailment"])
    with pytest.raises(DataError, match="sentence2"):
        load_split("rte", "dev", tmp_path)


@pytest.mark.parametrize(
    "glue_name, lines, bad",
    [
        ("RTE", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment", "1\tc\td\tmaybe"], "'maybe'"),
        ("SST-2", ["sentence\tlabel", "good\t1", "bad\t0", "meh\t2"], "'2'"),
        ("STS-B", ["sentence1\tsentence2\tscore", "a\tb\t3.2", "c\td\t7.5"], "'7.5'"),
    ],
)
def test_bad_label_names_value_and_row(tmp_path, glue_name, lines, bad):
    write_tsv(tmp_path, glue_name, "dev.tsv", lines)
    with pytest.raises(DataError) as info:
        load_split(glue_name, "dev", tmp_path)
    message = str(info.value)
    row = len(lines) - 1
    assert bad in message and f"row {row} (line {row + 1})" in message


def test_empty_and_header_only_files(tmp_path):
    write_tsv(tmp_path, "SST-2", "dev.tsv", [])
    with pytest.raises(DataError, match="empty"):
        load_split("sst2", "dev", tmp_path)
    write_tsv(tmp_path, "SST-2", "dev.tsv", ["sentence\tlabel"])
    with pytest.raises(DataError, match="no examples"):
        load_split("sst2", "dev", tmp_path)


def test_short_row_is_reported(tmp_path):
    write_tsv(tmp_path, "RTE", "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\ta\tentailment"])
    with pytest.raises(DataError, match="row 1"):
        load_split("rte", "dev", tmp_path)


def test_quotes_are_text_not_quoting(tmp_path):
    write_tsv(tmp_path, "SST-2", "train.tsv", ["sentence\tlabel", '"a fine" film\t1', 'it\'s "bad\t0'])
    train = load_split("sst2", "train", tmp_path)
    assert train["text_a"] == ['"a fine" film', 'it\'s "bad'] and train["label"] == [1, 0]


def test_mnli_three_way_labels_from_dev_matched(tmp_path):
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label"
    gold = ["neutral", "contradiction", "entailment", "neutral"]
    rows = [f"{i}\t0\t0\tfiction\tpremise {i}\thypothesis {i}\t{g}\t{g}" for i, g in enumerate(gold)]
    write_tsv(tmp_path, "MNLI", "dev_matched.tsv", [header, *rows])
    dev = load_split("MNLI", "validation", tmp_path)
    assert dev["label"] == [1, 2, 0, 1]
    assert dev["text_a"][1] == "premise 1" and dev["text_b"][1] == "hypothesis 1"


# --- tokenization ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(minilm_tokenizer):
    return minilm_tokenizer


def test_tokenize_pair_task_marks_second_segment(tokenizer):
    dev = load_split("rte", "dev", GLUE, max_samples=16, seed=0)
    tokens = tokenize_split(dev, tokenizer, max_length=512)
    assert tokens.column_names == ["input_ids", "attention_mask", "token_type_ids", "labels"]
    assert tokens["labels"] == dev["label"]
    lengths = set()
    for row, a, b in zip(tokens, dev["text_a"], dev["text_b"]):
        ids, types = row["input_ids"], row["token_type_ids"]
        first_sep = ids.index(tokenizer.sep_token_id)
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
        assert row["attention_mask"] == [1] * len(ids)
        assert ids == tokenizer(a, b)["input_ids"]
        lengths.add(len(ids))
    assert len(lengths) > 1, "rows must not be padded"


def test_tokenize_truncates_single_sentence_task(tokenizer):
    dev = load_split("sst2", "dev", GLUE, max_samples=32, seed=1)
    tokens = tokenize_split(dev, tokenizer, max_length=16)
    assert max(len(ids) for ids in tokens["input_ids"]) == 16
    assert all(set(types) == {0} for types in tokens["token_type_ids"])
    assert "text_a" not in tokens.column_names


def test_tokenize_keeps_float_labels(tokenizer):
    dev = load_split("stsb", "dev", GLUE, max_samples=8)
    tokens = tokenize_split(dev, tokenizer, max_length=128)
    assert tokens.features["labels"].dtype == "float32"
    assert tokens["labels"] == dev["label"]


# --- metrics -----------------------------------------------------------------------------------------


def logits_for(classes, num_labels=2):
    out = np.zeros((len(classes), num_labels), dtype=np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out


def test_accuracy_and_f1_by_hand():
    labels = [0, 1, 1, 0, 1]
    logits = logits_for([0, 1, 0, 0, 1])
    # tp 2, fp 0, fn 1: precision 1, recall 2/3, f1 0.8; 4 of 5 correct
    result = compute_metrics("mrpc", logits, labels)
    assert list(result) == ["f1", "accuracy"]
    assert result == pytest.approx({"f1": 0.8, "accuracy": 0.8})
    assert all(type(v) is float for v in result.values())
    assert compute_metrics("sst2", logits, labels) == pytest.approx({"accuracy": 0.8})
    assert compute_metrics("rte", np.array([0, 1, 0, 0, 1]), labels) == pytest.approx({"accuracy": 0.8})


def test_matthews_by_hand():
    # tp 2, tn 2, fp 1, fn 1: (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3
    result = compute_metrics("cola", logits_for([1, 1, 0, 0, 0, 1]), [1, 1, 1, 0, 0, 0])
    assert result["matthews_correlation"] == pytest.approx(1 / 3)
    assert main_metric("cola") == "matthews_correlation"


def test_three_class_accuracy():
    result = compute_metrics("mnli", logits_for([0, 1, 2, 2], num_labels=3), [0, 1, 2, 1])
    assert result == pytest.approx({"accuracy": 0.75})


def test_stsb_pearson_spearman():
    # y is x with neighbours swapped twice: rank differences 1,1,1,1,0 -> 1 - 6*4/(5*24) = 0.8 (pearson too)
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    result = compute_metrics("stsb", np.array(x, dtype=np.float32)[:, None], y)
    assert list(result) == ["pearson", "spearmanr"]
    assert result == pytest.approx({"pearson": 0.8, "spearmanr": 0.8})
    preds = [0.3, 4.1, 2.2, 2.9, 1.0, 3.7, 0.5]
    gold = [0.0, 4.5, 2.0, 3.5, 1.2, 3.0, 1.0]
    for shaped in (np.array(preds), np.array(preds)[:, None]):
        result = compute_metrics("STS-B", shaped, gold)
        assert result["pearson"] == pytest.approx(pearsonr(preds, gold)[0])
        assert result["spearmanr"] == pytest.approx(spearmanr(preds, gold)[0])
        assert all(type(v) is float for v in result.values())


def test_metric_input_errors():
    with pytest.raises(ValueError, match="3 classes"):
        compute_metrics("mnli", logits_for([0, 1]), [0, 1])
    with pytest.raises(ValueError, match="predictions for"):
        compute_metrics("sst2", logits_for([0, 1]), [0, 1, 1])
    with pytest.raises(ValueError, match=r"\[N, 1\]"):
        compute_metrics("stsb", np.zeros((3, 2)), [1.0, 2.0, 3.0])
    with pytest.raises(TaskError):
        compute_metrics("glue", logits_for([0]), [0])
