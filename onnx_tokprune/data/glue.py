"""GLUE tasks: local TSV files (offline) or `datasets.load_dataset("glue", task)` (online).

Local files are read the way GLUE's reference processors read them: tab-separated, no quoting,
UTF-8 (MRPC starts with a BOM), CoLA without a header, from a GLUE directory laid out as
`<dir>/<GlueName>/<split>.tsv` (MNLI dev: `MNLI/dev_matched.tsv`). Labels are HF `glue`'s integer
ids (RTE/QNLI: entailment 0, not_entailment 1; MNLI: entailment 0, neutral 1, contradiction 2);
STS-B's score is a float in [0, 5]. Every split is a `datasets.Dataset` with `text_a`, `label` and,
for pair tasks only, `text_b`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnx_tokprune.data.text import DataError
from onnx_tokprune.errors import TaskError

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class TaskSpec:
    """One GLUE task: where its text and labels are, locally and in HF `glue`, and how it is scored."""

    name: str
    glue_dir: str
    """Folder name inside a GLUE directory (e.g. "SST-2")."""
    text_columns: tuple[str, str | None]
    """First and second text column of the local TSV (second None for single-sentence tasks)."""
    hf_text_columns: tuple[str, str | None]
    """The same columns in HF `glue`."""
    label_column: str
    num_labels: int
    """Number of classes; 1 for regression (STS-B)."""
    label_names: tuple[str, ...]
    """HF `glue` class names, indexed by label id (empty for regression)."""
    tsv_labels: tuple[str, ...]
    """Label strings of the local TSV, indexed by label id (empty for regression)."""
    metrics: tuple[str, ...]
    """Reported metrics, main metric first."""
    main_metric: str
    fieldnames: tuple[str, ...] | None = None
    """Column names of a headerless TSV (CoLA); None when the file has a header."""
    dev_file: str = "dev.tsv"
    hf_dev_split: str = "validation"

    def __post_init__(self) -> None:
        assert self.metrics[0] == self.main_metric
        assert self.num_labels == (len(self.label_names) or 1) == (len(self.tsv_labels) or 1)

    @property
    def is_pair(self) -> bool:
        return self.text_columns[1] is not None

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_NLI3 = ("entailment", "neutral", "contradiction")
_TASK_LIST = (
    TaskSpec(
        "cola", "CoLA", ("sentence", None), ("sentence", None), "label", 2, ("unacceptable", "acceptable"), _BINARY,
        ("matthews_correlation", "accuracy"), "matthews_correlation",
        fieldnames=("source", "label", "orig_label", "sentence"),
    ),
    TaskSpec(
        "sst2", "SST-2", ("sentence", None), ("sentence", None), "label", 2, ("negative", "positive"), _BINARY,
        ("accuracy",), "accuracy",
    ),
    TaskSpec(
        "mrpc", "MRPC", ("#1 String", "#2 String"), ("sentence1", "sentence2"), "Quality", 2,
        ("not_equivalent", "equivalent"), _BINARY, ("f1", "accuracy"), "f1",
    ),
    TaskSpec(
        "stsb", "STS-B", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score", 1, (), (),
        ("pearson", "spearmanr"), "pearson",
    ),
    TaskSpec(
        "qqp", "QQP", ("question1", "question2"), ("question1", "question2"), "is_duplicate", 2,
        ("not_duplicate", "duplicate"), _BINARY, ("f1", "accuracy"), "f1",
    ),
    TaskSpec(
        "mnli", "MNLI", ("sentence1", "sentence2"), ("premise", "hypothesis"), "gold_label", 3, _NLI3, _NLI3, ("accuracy",), "accuracy",
        dev_file="dev_matched.tsv", hf_dev_split="validation_matched",
    ),
    TaskSpec("qnli", "QNLI", ("question", "sentence"), ("question", "sentence"), "label", 2, _NLI2, _NLI2, ("accuracy",), "accuracy"),
    TaskSpec("rte", "RTE", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label", 2, _NLI2, _NLI2, ("accuracy",), "accuracy"),
)
TASKS: dict[str, TaskSpec] = {t.name: t for t in _TASK_LIST}
_SPLITS = {"train": "train", "dev": "dev", "validation": "dev"}
STSB_RANGE = (0.0, 5.0)


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_ALIASES = {_key(alias): t.name for t in _TASK_LIST for alias in (t.name, t.glue_dir)}


def get_task(name: str) -> TaskSpec:
    """Look a task up case-insensitively, ignoring '-', '_' and spaces ("SST-2" = "sst-2" = "sst2")."""
    key = _key(name) if isinstance(name, str) else ""
    if key not in _ALIASES:
        raise TaskError(f"unknown task {name!r}: known tasks are {', '.join(TASKS)}")
    return TASKS[_ALIASES[key]]


def _features(spec: TaskSpec) -> datasets.Features:
    import datasets

    columns = {"text_a": datasets.Value("string")}
    if spec.is_pair:
        columns["text_b"] = datasets.Value("string")
    columns["label"] = datasets.Value("float32" if spec.is_regression else "int64")
    return datasets.Features(columns)


def _parse_label(spec: TaskSpec, value: str, where: str) -> int | float:
    value = value.strip()
    if spec.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        low, high = STSB_RANGE
        if not low <= score <= high:
            raise DataError(f"{where} has score {value!r}: task {spec.name} needs a number in [{low:g}, {high:g}]")
        return score
    if value not in spec.tsv_labels:
        raise DataError(f"{where} has label {value!r}: task {spec.name} expects one of {', '.join(spec.tsv_labels)}")
    return spec.tsv_labels.index(value)


def read_tsv(spec: TaskSpec, path: str | Path) -> dict[str, list[Any]]:
    """Columns text_a, (text_b,) label of a local GLUE TSV; DataError says what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path} not found: --data-dir should point at a GLUE directory holding {spec.glue_dir}/{path.name}"
        )
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path} is empty: it needs GLUE {spec.glue_dir} rows")
    if spec.fieldnames is None:
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    else:
        header = list(spec.fieldnames)
    wanted = [c for c in (*spec.text_columns, spec.label_column) if c is not None]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)} needed for task {spec.name} (header: {', '.join(header)})")
    if not rows:
        raise DataError(f"{path} has a header but no examples")
    index = {c: header.index(c) for c in wanted}
    width = max(index.values()) + 1
    first, second = spec.text_columns
    data: dict[str, list[Any]] = {"text_a": [], **({"text_b": []} if spec.is_pair else {}), "label": []}
    for row_number, (line, row) in enumerate(rows, start=1):
        where = f"{path} row {row_number} (line {line})"
        if len(row) < width:
            raise DataError(f"{where} has {len(row)} fields, expected at least {width}")
        data["text_a"].append(row[index[first]])
        if second is not None:
            data["text_b"].append(row[index[second]])
        data["label"].append(_parse_label(spec, row[index[spec.label_column]], where))
    return data


def _load_hub(spec: TaskSpec, split: str) -> datasets.Dataset:
    import datasets

    hf_split = "train" if split == "train" else spec.hf_dev_split
    try:
        hf = datasets.load_dataset("glue", spec.name, split=hf_split)
    except Exception as e:
        raise DataError(
            f"could not load glue/{spec.name} ({hf_split}) from the Hugging Face hub ({type(e).__name__}: {e}); "
            "offline, pass --data-dir with a GLUE directory"
        ) from e
    renames = {spec.hf_text_columns[0]: "text_a"}
    if spec.is_pair:
        renames[spec.hf_text_columns[1]] = "text_b"
    hf = hf.select_columns([*renames, "label"]).rename_columns(renames)
    return hf.cast(_features(spec))


def load_split(
    task: str, split: str, data_dir: str | Path | None = None, max_samples: int | None = None, seed: int = 0
) -> datasets.Dataset:
    """One split of a GLUE task as a Dataset with text_a, (text_b,) label.

    `split` is "train" or "dev" ("validation" is accepted; MNLI dev is validation_matched).
    With `data_dir` the local TSV `<data_dir>/<GlueName>/<split file>` is read; without it the split
    comes from `datasets.load_dataset("glue", task)` (needs the hub or its cache).
    `max_samples` smaller than the split keeps a random subset of that size, in shuffled order,
    fixed by `seed` (`Dataset.shuffle(seed)` then the first `max_samples` rows); otherwise the whole
    split is returned in file order.
    """
    import datasets

    spec = get_task(task)
    if split not in _SPLITS:
        raise DataError(f"split {split!r} is unknown: use 'train' or 'dev'")
    split = _SPLITS[split]
    if max_samples is not None and max_samples < 1:
        raise DataError(f"max_samples must be at least 1, got {max_samples}")
    if data_dir is None:
        data = _load_hub(spec, split)
    else:
        name = "train.tsv" if split == "train" else spec.dev_file
        data = datasets.Dataset.from_dict(read_tsv(spec, Path(data_dir) / spec.glue_dir / name), features=_features(spec))
    if max_samples is not None and max_samples < len(data):
        data = data.shuffle(seed=seed).select(range(max_samples))
    return data


def tokenize_split(dataset: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """input_ids / attention_mask / token_type_ids / labels of a `load_split` Dataset, text columns removed.

    Rows are not padded (the collator pads each batch). They are truncated to `max_length` tokens
    (pairs: longest segment first), which suits training; full-dev evaluation that must see every
    token should encode without truncation instead.
    """
    import datasets

    if max_length < 2:
        raise DataError(f"max_length must be at least 2, got {max_length}")
    pair = "text_b" in dataset.column_names
    features = datasets.Features(
        {
            "input_ids": datasets.Sequence(datasets.Value("int64")),
            "attention_mask": datasets.Sequence(datasets.Value("int64")),
            "token_type_ids": datasets.Sequence(datasets.Value("int64")),
            "labels": dataset.features["label"],
        }
    )

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = (batch["text_a"], batch["text_b"]) if pair else (batch["text_a"],)
        enc = tokenizer(*texts, truncation=True, max_length=max_length, return_token_type_ids=True)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "token_type_ids": enc["token_type_ids"],
            "labels": batch["label"],
        }

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, features=features)
