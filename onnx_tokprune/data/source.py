"""Examples from anywhere, the Hugging Face way, and the label scheme they imply.

A `DataSource` says where the examples are and which columns hold what:
- a GLUE task name (`task`): the local GLUE files under `data_dir` (data.glue) or `glue` from the hub;
- local files read by `datasets`' loaders, by extension: `.csv`, `.tsv` (tab-separated, no quoting,
  as GLUE writes them), `.json` / `.jsonl`, `.parquet`, `.txt` (one text per line, no labels);
- a hub dataset by name and config (`dataset`, `dataset_config`), for users who are online.
Columns are named with `text_column`, `pair_column`, `label_column`; when they are not named, a
file's header is searched for the usual names (TEXT_COLUMNS, LABEL_COLUMNS) and anything ambiguous
is a one-line DataError that says which option to give. A CSV/TSV without a header row needs
`column_names`; its first row would otherwise be taken for the header, and then no usual name is
found, which is an error that says so (never a silent guess). A GLUE task name given with files
fills in the task's column names, label names and metrics.

`LabelScheme` is what the labels mean: classification with class names (strings or integers in
the data; names sorted when a training set defines them, or the checkpoint's id2label when a trained
model does) or regression (float labels); it encodes labels to ids, refusing labels a model does not
know, and chooses the metrics (data.metrics).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnx_tokprune.data.text import TextExample, check_utf8_text, read_texts
from onnx_tokprune.errors import DataError, first_line

if TYPE_CHECKING:
    import datasets

FILE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {"sep": ",", "keep_default_na": False, "encoding": "utf-8-sig"}),
    ".tsv": ("csv", {"sep": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False, "encoding": "utf-8-sig"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),
}
TEXT_COLUMNS = (
    ("sentence1", "sentence2"), ("#1 String", "#2 String"), ("question", "sentence"), ("premise", "hypothesis"),
    ("question1", "question2"), ("text", "text_pair"), ("sentence", None), ("text", None),
)
"""Column names searched, in this order, when no text column is named (pairs first)."""
LABEL_COLUMNS = ("label", "labels", "score")
PROBLEMS = ("classification", "regression")
DEFAULT_LABEL = re.compile(r"LABEL_(\d+)")


@dataclass(frozen=True)
class DataSource:
    """Where examples come from and which columns hold what (the options every command shares)."""

    task: str | None = None
    data_dir: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    text_column: str | None = None
    pair_column: str | None = None
    label_column: str | None = None
    column_names: tuple[str, ...] | None = None

    def check(self) -> None:
        """DataError (or TaskError for an unknown --task) for options that do not go together."""
        if self.task is not None:
            from onnx_tokprune.data.glue import get_task

            get_task(self.task)
        if self.task is not None and self.dataset is not None:
            raise DataError("give a GLUE --task or a hub --dataset, not both")
        if self.pair_column is not None and self.text_column is None:
            raise DataError("--text-pair-column needs --text-column")
        if self.column_names is not None and len(set(self.column_names)) != len(self.column_names):
            raise DataError(f"--column-names lists a name twice: {','.join(self.column_names)}")

    def describe(self, file: str | None, split: str) -> str:
        if file is not None:
            return Path(file).name
        if self.dataset is not None:
            return f"{self.dataset}{'/' + self.dataset_config if self.dataset_config else ''} {split}"
        return f"{self.task} {split}"


@dataclass
class Split:
    """One split's examples and their raw labels (None for texts-only sources)."""

    examples: list[TextExample]
    labels: list[Any] | None
    name: str
    task: str | None = None
    """The GLUE task whose label ids these already are, if any."""


@dataclass(frozen=True)
class LabelScheme:
    """What a model's labels mean: classification with class names by id, or regression."""

    problem: str
    names: tuple[str, ...] = ()
    task: str | None = None
    """A GLUE task name: its labels are already ids, and its metrics apply."""

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise DataError(f"problem type {self.problem!r} is unknown: use {' or '.join(PROBLEMS)}")
        if self.problem == "classification" and len(self.names) < 2:
            raise DataError(f"classification needs at least 2 classes, the labels hold {list(self.names)}")

    @property
    def num_labels(self) -> int:
        return 1 if self.problem == "regression" else len(self.names)

    def id2label(self) -> dict[int, str] | None:
        return dict(enumerate(self.names)) if self.problem == "classification" else None

    @property
    def default_names(self) -> bool:
        """True for HF's placeholder names LABEL_0, LABEL_1, ... (a model fine-tuned without label names)."""
        return all((m := DEFAULT_LABEL.fullmatch(n)) is not None and int(m.group(1)) == i for i, n in enumerate(self.names))

    @classmethod
    def from_task(cls, task: str) -> LabelScheme:
        from onnx_tokprune.data.glue import get_task

        spec = get_task(task)
        if spec.is_regression:
            return cls("regression", task=spec.name)
        return cls("classification", spec.label_names, task=spec.name)

    @classmethod
    def from_labels(cls, values: Sequence[Any], problem: str | None = None, where: str = "the training data") -> LabelScheme:
        """The scheme a training set defines: regression for float labels (as HF's run_glue decides)
        or when asked; otherwise the distinct labels, sorted (numbers numerically), as class names."""
        present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if len(present) != len(values):
            raise DataError(f"{where}: {len(values) - len(present)} example(s) have no label: fill them in or remove them")
        if not present:
            raise DataError(f"{where} has no labelled examples")
        floats = any(isinstance(v, float) for v in present) and not all(float(v).is_integer() for v in present)
        if problem is None:
            problem = "regression" if floats else "classification"
        if problem == "regression":
            bad = next((v for v in present if isinstance(v, str) or isinstance(v, bool)), None)
            if bad is not None:
                raise DataError(f"{where}: label {bad!r} is not a number, so the task cannot be regression")
            return cls("regression")
        if floats:
            raise DataError(f"{where}: labels such as {next(v for v in present if not float(v).is_integer())!r} are not classes: "
                            "give --problem-type regression, or use integer or string labels")
        distinct = set(present)
        numeric = all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer()) for v in distinct)
        ordered = sorted(distinct, key=lambda v: (0, int(v), "") if numeric else (1, 0, str(v)))
        return cls("classification", tuple(str(int(v)) if numeric else str(v) for v in ordered))

    @classmethod
    def from_config(cls, config: Any) -> LabelScheme:
        """The scheme of a trained model (an HF config object or config.json dict)."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        id2label = get("id2label") or {}
        num_labels = get("num_labels") or len(id2label) or 2
        if num_labels == 1 or get("problem_type") == "regression":
            return cls("regression")
        names = tuple(str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(num_labels))
        return cls("classification", names)

    def encode(self, values: Sequence[Any], where: str) -> np.ndarray:
        """Label ids (int64) or scores (float32); DataError naming the first label the scheme does not know."""
        if self.problem == "regression":
            try:
                return np.asarray([float(v) for v in values], dtype=np.float32)
            except (TypeError, ValueError):
                bad = next(v for v in values if not _is_number(v))
                raise DataError(f"{where}: label {bad!r} is not a number, but the model is a regression model") from None
        index = {name: i for i, name in enumerate(self.names)}
        defaults = self.default_names
        out = np.empty(len(values), dtype=np.int64)
        for row, value in enumerate(values):
            key = str(int(value)) if isinstance(value, (int, np.integer, float)) and float(value).is_integer() else str(value)
            if key in index:
                out[row] = index[key]
            elif defaults and key.isdigit() and int(key) < len(self.names):
                out[row] = int(key)  # a model with HF's default names: integer labels are its ids
            else:
                raise DataError(
                    f"{where}: row {row + 1} has label {value!r}, which the model does not know (its labels: "
                    f"{', '.join(self.names)}): evaluate with data of the model's task, or fine-tune on these labels"
                )
        return out


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, (str, bool))


def check_model_labels(scheme: LabelScheme, model_scheme: LabelScheme, where: str) -> None:
    """DataError when data of `scheme` cannot be scored by a model of `model_scheme`."""
    if scheme.problem != model_scheme.problem:
        raise DataError(f"{where} is a {scheme.problem} task but the model does {model_scheme.problem}: use a model trained for it")
    if scheme.task is not None and scheme.num_labels != model_scheme.num_labels:
        raise DataError(
            f"the model classifies {model_scheme.num_labels} labels but task {scheme.task} has {scheme.num_labels}: "
            "fine-tune a checkpoint for this task first (tokprune-train finetune)"
        )


def load_table(path: Path, source: DataSource) -> datasets.Dataset:
    import datasets
    from datasets.utils import logging as ds_logging

    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise DataError(f"{path}: unknown file type {suffix or '(none)'}: use one of {', '.join(FILE_FORMATS)}")
    builder, options = FILE_FORMATS[suffix]
    options = dict(options)
    if source.column_names is not None:
        if builder != "csv":
            raise DataError(f"{path}: --column-names applies to headerless .csv/.tsv files, not {suffix}")
        options.update(header=None, names=list(source.column_names))
    if builder in ("csv", "text", "json"):
        check_utf8_text(path)
    bar = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as e:  # datasets, pandas and pyarrow raise many types for a malformed file
        cause = e.__cause__ or e.__context__
        wrapped = cause is not None and first_line(e).startswith("An error occurred while generating the dataset")
        raise DataError(f"{path} cannot be read as {suffix} ({first_line(cause if wrapped else e)}): check the file") from None
    finally:
        if bar:
            ds_logging.enable_progress_bar()


def _load_hub(source: DataSource, split: str) -> datasets.Dataset:
    import datasets

    try:
        return datasets.load_dataset(source.dataset, source.dataset_config, split=split)
    except Exception as e:  # the hub, the network and the dataset's own script raise many types
        raise DataError(
            f"could not load {source.describe(None, split)} from the Hugging Face hub ({first_line(e)}); offline, pass local files instead"
        ) from None


def _columns(table: datasets.Dataset, source: DataSource, where: str, need_labels: bool) -> tuple[str, str | None, str | None]:
    names = list(table.column_names)
    hint = "; if the file has no header row, name its columns with --column-names" if source.column_names is None else ""

    def present(column: str, option: str) -> str:
        if column not in names:
            raise DataError(f"{where} has no column {column!r} (its columns: {', '.join(map(repr, names))}){hint}: check {option}")
        return column

    if source.text_column is not None:
        text = present(source.text_column, "--text-column")
        pair = present(source.pair_column, "--text-pair-column") if source.pair_column else None
    else:
        found = next(((a, b) for a, b in TEXT_COLUMNS if a in names and (b is None or b in names)), None)
        if found is None:
            if len(names) == 1 and not need_labels:
                return names[0], None, None
            raise DataError(
                f"{where}: no text column found among {', '.join(map(repr, names))}{hint}, or name the text with "
                "--text-column (and --text-pair-column for pairs)"
            )
        text, pair = found
    label = None
    if source.label_column is not None:
        label = present(source.label_column, "--label-column")
    elif need_labels:
        label = next((c for c in LABEL_COLUMNS if c in names), None)
        if label is None:
            raise DataError(f"{where}: no label column found among {', '.join(map(repr, names))}{hint}, or name it with --label-column")
    if label is not None and label in (text, pair):
        raise DataError(f"{where}: column {label!r} cannot be both text and label")
    return text, pair, label


def _split_from_table(table: datasets.Dataset, source: DataSource, where: str, name: str, need_labels: bool, limit: int | None) -> Split:
    """The examples (and labels) of a loaded table; `where` names it in errors, `name` in reports."""
    text, pair, label = _columns(table, source, where, need_labels)
    if limit is not None:
        table = table.select(range(min(limit, len(table))))
    if len(table) == 0:
        raise DataError(f"{where} has no examples")
    texts = table[text]
    pairs = table[pair] if pair else [None] * len(texts)
    examples = []
    for row, (a, b) in enumerate(zip(texts, pairs), start=1):
        for value, column in ((a, text), (b, pair)):
            if column is not None and (not isinstance(value, str) or not value.strip()):
                raise DataError(f"{where}: row {row} has {'an empty' if isinstance(value, str) or value is None else 'a non-text'} "
                                f"{column!r}: fill it in or remove the row")
        examples.append(TextExample(a, b))
    return Split(examples, table[label] if label else None, name)


def load_split(source: DataSource, file: str | Path | None, split: str, need_labels: bool, limit: int | None = None,
               seed: int | None = None) -> Split:
    """One split's examples (and raw labels when `need_labels` or a label column is named).

    `file`: a local file for this split (else the source's task or hub dataset gives `split`:
    "train" or "validation"). `limit` keeps the first `limit` examples, or with `seed` a seeded
    random subset of that size (Dataset.shuffle(seed))."""
    source.check()
    if file is None and source.dataset is None and source.task is None:
        raise DataError("no data given: pass a file, a GLUE --task or a hub --dataset")
    if file is None and source.task is not None:
        return _glue_split(source, split, limit, seed)
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise DataError(f"{path} not found: pass a .csv, .tsv, .json, .jsonl, .parquet or .txt file")
        if _plain_glue_or_text(path, source, need_labels):
            return Split(read_texts(path, limit=limit), None, path.name)
        table, where = load_table(path, source), str(path)
    else:
        table, where = _load_hub(source, split), source.describe(None, split)
    if source.task is not None:
        source = _task_columns(source, table.column_names)
    if seed is not None and limit is not None and limit < len(table):
        table = table.shuffle(seed=seed)
    name = source.describe(None if file is None else str(file), split)
    return _split_from_table(table, source, where, name, need_labels or source.label_column is not None, limit)


def _plain_glue_or_text(path: Path, source: DataSource, need_labels: bool) -> bool:
    """Texts-only reading of a .tsv/.txt with no columns named goes through data.text.read_texts (GLUE
    layouts, one text per line, its own errors for ambiguous files)."""
    named = source.text_column or source.column_names or source.label_column or source.task
    suffix = path.suffix.lower()
    return not need_labels and not named and (suffix in (".tsv", ".txt") or suffix not in FILE_FORMATS)


def _task_columns(source: DataSource, columns: Sequence[str]) -> DataSource:
    """A GLUE task's column names (local TSV or hub glue names, whichever the data has) where not named."""
    from dataclasses import replace

    from onnx_tokprune.data.glue import get_task

    spec = get_task(source.task)
    for (text, pair), label in ((spec.text_columns, spec.label_column), (spec.hf_text_columns, "label")):
        if text in columns:
            return replace(source, text_column=source.text_column or text, pair_column=source.pair_column or pair,
                           label_column=source.label_column or (label if label in columns else None))
    return source


def _glue_split(source: DataSource, split: str, limit: int | None, seed: int | None) -> Split:
    from onnx_tokprune.data.glue import get_task
    from onnx_tokprune.data.glue import load_split as load_glue

    spec = get_task(source.task)
    if limit is not None and seed is None:
        data = load_glue(spec.name, split, source.data_dir)
        data = data.select(range(min(limit, len(data))))
    else:
        data = load_glue(spec.name, split, source.data_dir, limit, seed or 0)
    pairs = data["text_b"] if "text_b" in data.column_names else [None] * len(data)
    examples = [TextExample(a, b) for a, b in zip(data["text_a"], pairs)]
    return Split(examples, list(data["label"]), spec.name, task=spec.name)


def encode_labels(split: Split, scheme: LabelScheme) -> np.ndarray:
    """A split's labels as the scheme's ids (GLUE task labels are ids already) or scores."""
    if split.labels is None:
        raise DataError(f"{split.name} has no labels: name the label column with --label-column")
    if split.task is None:
        return scheme.encode(split.labels, split.name)
    task = LabelScheme.from_task(split.task)
    check_model_labels(task, scheme, split.name)
    if scheme.problem == "regression":
        return np.asarray(split.labels, dtype=np.float32)
    if scheme.names == task.names or scheme.default_names:
        return np.asarray(split.labels, dtype=np.int64)
    return scheme.encode([task.names[int(i)] for i in split.labels], split.name)


def metric_scheme(split: Split, scheme: LabelScheme) -> LabelScheme:
    """The scheme whose metrics `split` is scored with: its GLUE task's (e.g. SST-2: accuracy) when the
    split is a GLUE task's and the model's labels fit the task, else the model's `scheme`."""
    if split.task is None:
        return scheme
    task = LabelScheme.from_task(split.task)
    return task if task.problem == scheme.problem and task.num_labels == scheme.num_labels else scheme


def to_dataset(split: Split, labels: np.ndarray, scheme: LabelScheme) -> datasets.Dataset:
    """A split as the Dataset data.glue.tokenize_split takes: text_a, (text_b,) label."""
    import datasets

    columns: dict[str, Any] = {"text_a": [e.text for e in split.examples]}
    features = {"text_a": datasets.Value("string")}
    if any(e.text_pair is not None for e in split.examples):
        columns["text_b"] = [e.text_pair or "" for e in split.examples]
        features["text_b"] = datasets.Value("string")
    columns["label"] = labels.tolist()
    features["label"] = datasets.Value("float32" if scheme.problem == "regression" else "int64")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))
