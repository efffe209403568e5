"""Own data in every command: files through `datasets`' loaders, named columns, string/int/float
labels, metrics by task type, and the errors for what cannot be read without guessing."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SST2_SENTENCES, assert_one_line_error
from onnx_tokprune import cli
from onnx_tokprune.data.metrics import compute_metrics, metric_names
from onnx_tokprune.data.source import DataSource, LabelScheme, encode_labels, load_split
from onnx_tokprune.errors import DataError

LABELS = ("negative", "neutral", "positive")
COLUMN_OPTIONS = {"text_column", "text_pair_column", "label_column", "column_names", "task", "dataset", "dataset_config", "data_dir"}
DATA_COMMANDS = {
    "calibrate": cli.calibrate_command, "parity": cli.parity_command, "bench": cli.bench_command, "match-flops": cli.match_flops_command,
    "show": cli.show_command, "eval": cli.eval_command, "train finetune": cli.finetune_command, "train ltp": cli.ltp_command,
    "train top": cli.top_command,
}


def write_csv(path: Path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def run(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


@pytest.mark.parametrize("name", sorted(DATA_COMMANDS))
def test_every_data_command_takes_the_same_column_options(name):
    params = {p.name for p in DATA_COMMANDS[name].params}
    assert COLUMN_OPTIONS <= params, f"{name} lacks {sorted(COLUMN_OPTIONS - params)}"


def test_csv_with_named_columns_and_string_labels(tmp_path):
    path = write_csv(tmp_path / "reviews.csv", ["review", "stars", "rating"], [(t, 3, LABELS[i % 3]) for i, t in enumerate(SST2_SENTENCES)])
    source = DataSource(text_column="review", label_column="rating")
    split = load_split(source, path, "train", need_labels=True)
    assert [e.text for e in split.examples] == SST2_SENTENCES and split.labels[:3] == list(LABELS)
    scheme = LabelScheme.from_labels(split.labels)
    assert scheme.problem == "classification" and scheme.names == LABELS and scheme.id2label() == {0: "negative", 1: "neutral", 2: "positive"}
    np.testing.assert_array_equal(encode_labels(split, scheme)[:4], [0, 1, 2, 0])
    # a model with other labels refuses one it does not know, naming the row and its labels
    other = LabelScheme("classification", ("negative", "positive"))
    with pytest.raises(DataError, match="row 2 has label 'neutral', which the model does not know \\(its labels: negative, positive\\)"):
        encode_labels(split, other)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_json_and_parquet_files(tmp_path, suffix):
    import pandas as pd

    frame = pd.DataFrame({"premise": SST2_SENTENCES[:4], "hypothesis": SST2_SENTENCES[4:8], "label": [0, 1, 1, 0]})
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        path.write_text(json.dumps(frame.to_dict(orient="records")))
    split = load_split(DataSource(), path, "validation", need_labels=True)
    assert split.examples[1].text == SST2_SENTENCES[1] and split.examples[1].text_pair == SST2_SENTENCES[5]
    assert LabelScheme.from_labels(split.labels).names == ("0", "1")


def test_a_headerless_tsv_is_never_read_as_text_plus_label(tmp_path):
    path = write_csv(tmp_path / "plain.tsv", None, [(t, i % 2) for i, t in enumerate(SST2_SENTENCES)], delimiter="\t")
    # texts only (calibrate, parity, bench): the label column must not end up in the sentence
    with pytest.raises(DataError, match="no recognised header: .*--column-names"):
        load_split(DataSource(), path, "train", need_labels=False)
    # labelled (eval, training): the first row would be a header; nothing usual is found
    with pytest.raises(DataError, match="no text column found .*if the file has no header row, name its columns with --column-names"):
        load_split(DataSource(), path, "train", need_labels=True)
    named = load_split(DataSource(column_names=("text", "label")), path, "train", need_labels=True)
    assert named.examples[0].text == SST2_SENTENCES[0] and named.labels[:2] == [0, 1]


def test_float_labels_are_regression_and_problem_type_overrides(tmp_path):
    assert LabelScheme.from_labels([0.5, 3.2, 4.0]).problem == "regression"
    assert LabelScheme.from_labels([1, 2, 3]).names == ("1", "2", "3")
    assert LabelScheme.from_labels([1, 2, 3], problem="regression").num_labels == 1
    assert LabelScheme.from_labels([2.0, 10.0, 1.0]).names == ("1", "2", "10")  # integral floats are classes, numeric order
    with pytest.raises(DataError, match="is not a number"):
        LabelScheme.from_labels(["a", "b"], problem="regression")
    with pytest.raises(DataError, match="are not classes"):
        LabelScheme.from_labels([0.5, 1.0], problem="classification")
    with pytest.raises(DataError, match="have no label"):
        LabelScheme.from_labels(["a", None])
    # integer labels on a model with HF's default names are its ids; other integer names go by name
    assert LabelScheme("classification", ("LABEL_0", "LABEL_1")).encode([1, 0], "x").tolist() == [1, 0]
    assert LabelScheme("classification", ("1", "2", "3")).encode([3, 1], "x").tolist() == [2, 0]


def test_metrics_by_task_type_and_override():
    binary, three, regression = LabelScheme("classification", ("no", "yes")), LabelScheme("classification", LABELS), LabelScheme("regression")
    assert metric_names(binary) == ("f1", "accuracy")
    assert metric_names(three) == ("accuracy", "macro_f1")
    assert metric_names(regression) == ("pearson", "spearmanr")
    assert metric_names("sst2") == ("accuracy",) and metric_names("cola")[0] == "matthews_correlation"
    assert metric_names(three, "macro_f1") == ("macro_f1", "accuracy")
    with pytest.raises(DataError, match="metric 'f1' does not apply"):
        metric_names(three, "f1")
    got = compute_metrics(three, np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]))
    assert got["accuracy"] == 0.75 and got["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_glue_task_shortcut_fills_columns_of_a_file(tmp_path):
    # MRPC's own layout: the task names its columns (#1 String, #2 String, Quality) and its labels
    path = write_csv(tmp_path / "mrpc.tsv", ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                     [(1, 1, 2, "a b", "c d"), (0, 3, 4, "e f", "g h")], delimiter="\t")
    split = load_split(DataSource(task="mrpc"), path, "validation", need_labels=True)
    assert split.examples[0].text_pair == "c d" and split.labels == [1, 0]


def test_missing_named_column_lists_the_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["review", "rating"], [("good", "positive")])
    with pytest.raises(DataError, match="has no column 'text' \\(its columns: 'review', 'rating'\\).*check --text-column"):
        load_split(DataSource(text_column="text"), path, "train", need_labels=False)
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown file type .xlsx"):
        load_split(DataSource(text_column="review"), tmp_path / "d.xlsx", "train", need_labels=True)


def test_cli_data_errors_are_one_line(tiny_checkpoint, tmp_path):
    path = write_csv(tmp_path / "plain.tsv", None, [(t, i % 2) for i, t in enumerate(SST2_SENTENCES)], delimiter="\t")
    assert_one_line_error(run(cli.calibrate_command, ["--model", tiny_checkpoint, "--data", path, "--keep", "0.5", "--output", tmp_path / "c"]),
                          "--column-names")
    assert_one_line_error(run(cli.calibrate_command, ["--model", tiny_checkpoint, "--keep", "0.5", "--output", tmp_path / "c"]),
                          "no data given")
    assert_one_line_error(run(cli.finetune_command, ["--model", tiny_checkpoint, "--output", tmp_path / "f"]), "give the training data")
    assert_one_line_error(run(cli.finetune_command, ["--model", tiny_checkpoint, "--output", tmp_path / "f", "--train-file", path,
                                                     "--column-names", "text,label"]), "--validation-file")
    assert_one_line_error(run(cli.calibrate_command, ["--model", tiny_checkpoint, "--data", path, "--keep", "0.5", "--output", tmp_path / "c",
                                                      "--text-pair-column", "b"]), "--text-pair-column needs --text-column")


def test_own_csv_end_to_end_on_a_tiny_model(tiny_checkpoint, tmp_path):
    """finetune -> calibrate -> export -> eval -> classify on a 3-class CSV with string labels, no GLUE name."""
    rows = [(t, LABELS[i % 3]) for i, t in enumerate(SST2_SENTENCES * 3)]
    train = write_csv(tmp_path / "train.csv", ["review", "rating"], rows)
    validation = write_csv(tmp_path / "validation.csv", ["review", "rating"], rows[:9])
    columns = ["--text-column", "review", "--label-column", "rating"]
    ft = run(cli.main, ["train", "finetune", "--model", tiny_checkpoint, "--train-file", train, "--validation-file", validation, *columns,
                        "--output", tmp_path / "ft", "--epochs", 1, "--batch-size", 8, "--max-length", 32])
    assert ft.exit_code == 0, ft.output
    assert "validation: accuracy" in ft.output and "macro_f1" in ft.output
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"} and config["label2id"]["neutral"] == 1
    cal = run(cli.calibrate_command, ["--model", tmp_path / "ft", "--data", train, *columns, "--keep", "0.5", "--output", tmp_path / "cal"])
    assert cal.exit_code == 0, cal.output
    assert run(cli.export_command, ["--model", tmp_path / "cal", "--output", tmp_path / "art"]).exit_code == 0
    report = tmp_path / "eval.json"
    ev = run(cli.eval_command, ["--model", tmp_path / "cal", "--artifact", tmp_path / "art", "--data", validation, *columns, "--json", report])
    assert ev.exit_code == 0, ev.output
    results = json.loads(report.read_text())
    assert [r["main_metric"] for r in results] == ["accuracy"] * 3 and results[0]["task"] == "validation.csv"
    assert results[0]["metrics"] == results[2]["metrics"]
    from onnx_tokprune.runtime import open_artifact

    shown = run(cli.show_command, ["--artifact", tmp_path / "art", "--data", validation, *columns, "--row", 2, "--png", tmp_path / "s.png"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == "input (10/10): [CLS] un ##fl ##in ##ching ##ly bleak and desperate [SEP]"
    assert (tmp_path / "s.png").is_file()
    assert_one_line_error(run(cli.show_command, ["--artifact", tmp_path / "art", "--data", validation, *columns, "--row", 99,
                                                 "--png", tmp_path / "t.png"]), "there is no row 99")
    labels = {r["label"] for r in open_artifact(tmp_path / "art", threads=1).classify(SST2_SENTENCES)}
    assert labels <= set(LABELS) and labels
    # evaluation data with a label the model does not know
    unknown = write_csv(tmp_path / "unknown.csv", ["review", "rating"], [("fine", "mixed")])
    assert_one_line_error(run(cli.eval_command, ["--model", tmp_path / "cal", "--data", unknown, *columns]), "label 'mixed', which the model does not know")


def test_a_hub_dataset_by_name_and_config(monkeypatch):
    """--dataset NAME --dataset-config C goes to datasets.load_dataset(NAME, C, split=...) (offline
    here: the loader is replaced by one that records the call); its columns are named as for files."""
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None, **kwargs):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"content": SST2_SENTENCES[:3], "stars": [5, 1, 3]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = DataSource(dataset="someone/reviews", dataset_config="en", text_column="content", label_column="stars")
    split = load_split(source, None, "validation", need_labels=True)
    assert calls == [("someone/reviews", "en", "validation")]
    assert split.labels == [5, 1, 3] and split.name == "someone/reviews/en validation"
    assert LabelScheme.from_labels(split.labels).names == ("1", "3", "5")
    with pytest.raises(DataError, match="not both"):
        load_split(DataSource(task="sst2", dataset="x"), None, "train", need_labels=True)


def test_every_recipe_names_options_of_its_command():
    """models/*.json: each key is an option of the command the file name says (finetune_, finetune-qa_, ltp_, top_)."""
    recipes = sorted((Path(__file__).resolve().parents[1] / "models").glob("*.json"))
    commands = {"finetune": cli.finetune_command, "finetune-qa": cli.finetune_qa_command, "ltp": cli.ltp_command, "top": cli.top_command}
    assert recipes
    for path in recipes:
        command = commands[path.stem.split("_")[0]]
        keys = set(json.loads(path.read_text())) - {"comment"}
        assert keys <= {p.name for p in command.params}, f"{path.name}: {sorted(keys - {p.name for p in command.params})}"


def test_every_recipe_parses_into_its_command():
    """models/*.json load: click converts each value to its option's type (a flag stays a bool, a
    number a number) and the recipe's values are what the command receives."""
    recipes = sorted((Path(__file__).resolve().parents[1] / "models").glob("*.json"))
    commands = {"finetune": cli.finetune_command, "finetune-qa": cli.finetune_qa_command, "ltp": cli.ltp_command, "top": cli.top_command}
    for path in recipes:
        command = commands[path.stem.split("_")[0]]
        recipe = {k: v for k, v in json.loads(path.read_text()).items() if k != "comment"}
        with command.make_context(command.name, ["--recipe", str(path), "--model", "m", "--output", "o"]) as ctx:
            for key, value in recipe.items():
                assert ctx.params[key] == value, f"{path.name}: {key} = {ctx.params[key]!r}, recipe {value!r}"
            if re.fullmatch(r"ltp_(sst2|mrpc|rte)_0\d+", path.stem):
                assert ctx.params["distill"] is True and ctx.params["init_flops"] <= float("0." + path.stem.split("_")[-1][1:])
            if re.fullmatch(r"top_(sst2|mrpc|rte)_0\d+", path.stem):
                assert ctx.params["target_flops"] == float("0." + path.stem.split("_")[-1][1:]), f"{path.name}: target_flops"
