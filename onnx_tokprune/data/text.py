"""Read sentences (or sentence pairs) from a text file: GLUE TSVs or one text per line.

GLUE TSVs are read the way GLUE's processors read them: tab-separated, no quoting, UTF-8 with an
optional BOM (MRPC). Recognised layouts, by header:

- ``sentence`` (SST-2), ``sentence1``/``sentence2`` (RTE, STS-B), ``#1 String``/``#2 String`` (MRPC),
  ``question``/``sentence`` (QNLI);
- CoLA's headerless 4-column layout (``source, label, orig_label, sentence``).

Any other file is read as plain text, one example per non-empty line.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

PAIR_COLUMNS = (("sentence1", "sentence2"), ("#1 String", "#2 String"), ("question", "sentence"))
SINGLE_COLUMNS = ("sentence",)


class DataError(ValueError):
    """A data file that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class TextExample:
    text: str
    text_pair: str | None = None


def read_texts(path: str | os.PathLike, limit: int | None = None) -> list[TextExample]:
    """Read examples from `path` (see module docstring); raise DataError for a missing or empty file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: pass a GLUE .tsv or a text file with one sentence per line")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"{path} is empty: it needs at least one sentence")
    examples = _parse(rows)
    if not examples:
        raise DataError(f"{path} has a header but no examples")
    return examples[:limit] if limit else examples


def _parse(rows: list[list[str]]) -> list[TextExample]:
    header = [c.strip() for c in rows[0]]
    for a, b in PAIR_COLUMNS:
        if a in header and b in header:
            ia, ib = header.index(a), header.index(b)
            return [TextExample(r[ia], r[ib]) for r in rows[1:] if len(r) > max(ia, ib)]
    for a in SINGLE_COLUMNS:
        if a in header:
            ia = header.index(a)
            return [TextExample(r[ia]) for r in rows[1:] if len(r) > ia]
    if all(len(r) == 4 and r[1] in ("0", "1") for r in rows[:5]):
        return [TextExample(r[3]) for r in rows]
    return [TextExample("\t".join(r).strip()) for r in rows]
