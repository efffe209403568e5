"""Extractive QA data: SQuAD-format files or a hub dataset, as one flat table, and its training windows.

A `QASplit` holds questions with their context and reference answers, read from
- the official SQuAD JSON (`{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}`,
  v1.1; recognised by that structure, never guessed from the file name);
- a flat file (.jsonl, .json records, .parquet) with the hub `squad` columns `question`, `context`,
  `answers` (`{"text": [...], "answer_start": [...]}`), and optional `id`, `title`;
- a hub dataset by name (`squad`, online), its `train` / `validation` split, through `datasets`.
Both paths give the same columns, so everything downstream is one code path.

`split_articles` is the fixed article split of a single file (docs/design.md §7): article i (file
order, from 0) goes to the evaluation part when i % 4 == 3, else to the training part.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnx_tokprune.errors import DataError, first_line

EVAL_EVERY = 4
"""split_articles: every 4th article (i % 4 == 3) is evaluation data."""
FLAT_FORMATS = (".jsonl", ".json", ".parquet")
REQUIRED = ("question", "context", "answers")


@dataclass(frozen=True)
class QASplit:
    ids: list[str]
    titles: list[str]
    questions: list[str]
    contexts: list[str]
    answers: list[dict[str, list]]
    """Per question {"text": [...], "answer_start": [...]} (several references in dev sets)."""
    name: str

    def __len__(self) -> int:
        return len(self.questions)

    def head(self, limit: int | None) -> QASplit:
        """The first `limit` questions (all with None or 0)."""
        if not limit:
            return self
        return QASplit(self.ids[:limit], self.titles[:limit], self.questions[:limit], self.contexts[:limit], self.answers[:limit], self.name)

    def sample(self, limit: int | None, seed: int) -> QASplit:
        """A seeded random `limit` questions, in file order (all with None or 0, or `limit` >= len)."""
        if not limit or limit >= len(self):
            return self
        import numpy as np

        rows = sorted(np.random.default_rng(seed).choice(len(self), size=limit, replace=False).tolist())
        fields = (self.ids, self.titles, self.questions, self.contexts, self.answers)
        return QASplit(*([values[i] for i in rows] for values in fields), self.name)

    def answer_texts(self) -> list[list[str]]:
        return [list(a["text"]) for a in self.answers]


def is_squad_json(data: Any) -> bool:
    """The official SQuAD layout: a "data" list of articles with "paragraphs" holding "context" and "qas"."""
    articles = data.get("data") if isinstance(data, dict) else None
    return (
        isinstance(articles, list) and bool(articles) and isinstance(articles[0], dict)
        and isinstance(articles[0].get("paragraphs"), list)
    )


def flatten_squad(data: dict, where: str) -> list[dict]:
    """One record per question of an official SQuAD JSON object; DataError names what is malformed."""
    records = []
    try:
        for a, article in enumerate(data["data"]):
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = qa.get("answers") or []
                    records.append({
                        "id": str(qa.get("id", len(records))), "title": str(article.get("title", a)),
                        "question": qa["question"], "context": context,
                        "answers": {"text": [x["text"] for x in answers], "answer_start": [int(x["answer_start"]) for x in answers]},
                    })
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where} is not a valid SQuAD file ({type(e).__name__}: {first_line(e)}): every paragraph needs "
                        "context and qas, every question question and answers") from None
    return records


def _from_records(records: Sequence[dict], name: str) -> QASplit:
    for i, r in enumerate(records):
        missing = [c for c in REQUIRED if c not in r or r[c] is None]
        if missing:
            raise DataError(f"{name}: question {i} has no {', '.join(missing)}: a QA file needs the columns question, context, answers")
        answers = r["answers"]
        if not isinstance(answers, dict) or len(answers.get("text") or []) != len(answers.get("answer_start") or []):
            raise DataError(f"{name}: question {i}: answers must be {{\"text\": [...], \"answer_start\": [...]}} of equal length")
    return QASplit(
        [str(r.get("id", i)) for i, r in enumerate(records)], [str(r.get("title", "")) for r in records],
        [r["question"] for r in records], [r["context"] for r in records],
        [{"text": list(r["answers"]["text"]), "answer_start": [int(s) for s in r["answers"]["answer_start"]]} for r in records],
        name,
    )


def read_qa_file(path: str | os.PathLike) -> QASplit:
    """A SQuAD JSON file or a flat .jsonl / .json / .parquet table with the squad columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: pass a SQuAD JSON file (or .jsonl/.parquet with question, context, answers)")
    suffix = path.suffix.lower()
    if suffix not in FLAT_FORMATS:
        raise DataError(f"{path}: QA data must be .json (SQuAD format or records), .jsonl or .parquet, not {suffix or 'no extension'}")
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path} is not UTF-8 JSON ({first_line(e)}): pass a SQuAD JSON file") from None
        if is_squad_json(data):
            return _from_records(flatten_squad(data, str(path)), str(path))
        if not isinstance(data, list):
            raise DataError(f"{path} is neither a SQuAD file ({{\"data\": [articles]}}) nor a list of question records")
        return _from_records(data, str(path))
    from onnx_tokprune.data.source import DataSource, load_table

    return _from_records(list(load_table(path, DataSource())), str(path))


def load_hub_qa(name: str, config: str | None, split: str) -> QASplit:
    """A hub QA dataset (online) with the squad columns, e.g. `squad`, split train or validation."""
    import datasets

    try:
        table = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, unknown name or split
        raise DataError(f"hub dataset {name} ({split}) cannot be loaded: {first_line(e)}") from None
    return _from_records(list(table), f"{name}:{split}")


def load_qa(file: str | os.PathLike | None, dataset: str | None, dataset_config: str | None, split: str, limit: int | None = None) -> QASplit:
    """`file` when given, else the hub `dataset`'s `split`; the first `limit` questions."""
    if file is not None:
        return read_qa_file(file).head(limit)
    if dataset is None:
        raise DataError("give QA data: a SQuAD-format file, or --dataset squad (online)")
    return load_hub_qa(dataset, dataset_config, split).head(limit)


def split_articles(data: dict, part: str) -> dict:
    """The `part` ("train" or "eval") of an official SQuAD JSON object by the fixed article rule."""
    if part not in ("train", "eval"):
        raise ValueError(f"part must be train or eval, got {part!r}")
    keep = [a for i, a in enumerate(data["data"]) if (i % EVAL_EVERY == EVAL_EVERY - 1) == (part == "eval")]
    return {"version": data.get("version", ""), "data": keep}


def training_windows(split: QASplit, windows) -> Any:
    """A `datasets.Dataset` of every window (runtime.qa.QAWindows) with start/end token labels from the
    first reference answer (CLS where the window does not hold it)."""
    import datasets

    from onnx_tokprune.runtime.qa import answer_token_span

    rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "token_type_ids": [], "start_positions": [], "end_positions": []}
    for window in windows.encode(split.questions, split.contexts):
        answer = split.answers[window.example]
        if not answer["text"]:
            raise DataError(f"{split.name}: question {window.example} has no answer; training needs one per question")
        start = answer["answer_start"][0]
        first, last = answer_token_span(window, start, start + len(answer["text"][0]))
        rows["input_ids"].append(window.ids)
        rows["attention_mask"].append([1] * len(window.ids))
        rows["token_type_ids"].append(window.type_ids)
        rows["start_positions"].append(first)
        rows["end_positions"].append(last)
    return datasets.Dataset.from_dict(rows)
