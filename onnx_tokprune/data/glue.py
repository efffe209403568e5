"""GLUE tasks: local TSV files (offline) or `datasets.load_dataset("glue", task)` (online).

Local files are read the way GLUE's reference processors read them (tab-separated, no quoting,
UTF-8 with MRPC's BOM, CoLA without a header) from a GLUE directory laid out as
`<dir>/<GlueName>/{train,dev}.tsv`. Labels are HF `glue`'s integer ids (RTE/QNLI: entailment = 0;
MNLI: entailment 0, neutral 1, contradiction 2); STS-B's score is a float.
Every split comes back as a `datasets.Dataset` with `text_a`, `label` and, for pair tasks, `text_b`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from onnx_tokprune.data.text import DataError


class TaskError(ValueError):
    """An unknown task name."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    glue_name: str
    columns: tuple[str, str | None]
    """Text columns in the local TSV."""
    hf_columns: tuple[str, str | None]
    """Text columns in HF `glue`."""
    label_column: str
    label_names: tuple[str, ...]
    """Label strings in file order of ids (empty for regression)."""
    metrics: tuple[str, ...]
    header: bool = True
    dev_split: str = "validation"

    @property
    def num_labels(self) -> int:
        return len(self.label_names) or 1

    @property
    def is_pair(self) -> bool:
        return self.columns[1] is not None


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("cola", "CoLA", ("3", None), ("sentence", None), "1", _BINARY, ("matthews_correlation", "accuracy"), header=False),
        TaskSpec("sst2", "SST-2", ("sentence", None), ("sentence", None), "label", _BINARY, ("accuracy",)),
        TaskSpec("mrpc", "MRPC", ("#1 String", "#2 String"), ("sentence1", "sentence2"), "Quality", _BINARY, ("f1", "accuracy")),
        TaskSpec("stsb", "STS-B", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score", (), ("pearson", "spearmanr")),
        TaskSpec("qqp", "QQP", ("question1", "question2"), ("question1", "question2"), "is_duplicate", _BINARY, ("f1", "accuracy")),
        TaskSpec(
            "mnli", "MNLI", ("sentence1", "sentence2"), ("premise", "hypothesis"), "gold_label",
            ("entailment", "neutral", "contradiction"), ("accuracy",), dev_split="validation_matched",
        ),
        TaskSpec("qnli", "QNLI", ("question", "sentence"), ("question", "sentence"), "label", _NLI2, ("accuracy",)),
        TaskSpec("rte", "RTE", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label", _NLI2, ("accuracy",)),
    )
}
_SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "validation": "dev.tsv"}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name, case-insensitively, ignoring '-' and '_' (SST-2 = sst2)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise TaskError(f"unknown task {name!r}: use one of {', '.join(TASKS)}")
    return TASKS[key]


def _label(spec: TaskSpec, value: str, row: int, path: Path):
    if not spec.label_names:
        try:
            return float(value)
        except ValueError:
            raise DataError(f"{path}: row {row} has score {value!r}, not a number") from None
    if value not in spec.label_names:
        raise DataError(f"{path}: row {row} has label {value!r}; task {spec.name} expects one of {list(spec.label_names)}")
    return spec.label_names.index(value)


def read_local(spec: TaskSpec, path: Path) -> dict[str, list]:
    """Columns text_a, (text_b,) label of a GLUE TSV."""
    if not path.is_file():
        raise DataError(f"{path} not found: --data-dir must point at a GLUE directory holding {spec.glue_name}/{path.name}")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    if not rows or (spec.header and len(rows) < 2):
        raise DataError(f"{path} has no examples")
    if spec.header:
        header, rows = rows[0], rows[1:]
        wanted = [c for c in (*spec.columns, spec.label_column) if c is not None]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing} for task {spec.name} (found {header})")
        index = {c: header.index(c) for c in wanted}
    else:
        index = {c: int(c) for c in (*spec.columns, spec.label_column) if c is not None}
    need = max(index.values())
    data: dict[str, list] = {"text_a": [], "label": []}
    if spec.is_pair:
        data["text_b"] = []
    for i, row in enumerate(rows, start=1):
        if len(row) <= need:
            raise DataError(f"{path}: row {i} has {len(row)} fields, expected at least {need + 1}")
        data["text_a"].append(row[index[spec.columns[0]]])
        if spec.is_pair:
            data["text_b"].append(row[index[spec.columns[1]]])
        data["label"].append(_label(spec, row[index[spec.label_column]], i, path))
    return data


def load_split(task: str, split: str, data_dir: str | Path | None = None, max_samples: int | None = None, seed: int = 0):
    """A split ("train" or "dev") as a Dataset; `max_samples` keeps a seeded random subset."""
    import datasets

    spec = get_task(task)
    if split not in _SPLIT_FILES:
        raise DataError(f"split {split!r} is unknown: use 'train' or 'dev'")
    if data_dir is not None:
        data = datasets.Dataset.from_dict(read_local(spec, Path(data_dir) / spec.glue_name / _SPLIT_FILES[split]))
    else:
        hf = datasets.load_dataset("glue", spec.name, split="train" if split == "train" else spec.dev_split)
        renames = {spec.hf_columns[0]: "text_a"}
        if spec.is_pair:
            renames[spec.hf_columns[1]] = "text_b"
        data = hf.rename_columns(renames).select_columns([*renames.values(), "label"])
    if max_samples is not None and max_samples < len(data):
        data = data.shuffle(seed=seed).select(range(max_samples))
    return data


def tokenize_split(dataset, tokenizer, max_length: int):
    """input_ids / attention_mask / token_type_ids / labels, truncated at `max_length` (training only:
    evaluation tokenizes without truncation), unpadded (the collator pads each batch)."""

    def encode(batch):
        pair = batch["text_b"] if "text_b" in batch else None
        enc = tokenizer(batch["text_a"], pair, truncation=True, max_length=max_length)
        enc["labels"] = batch["label"]
        return enc

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names)
