"""Read sentences (or sentence pairs) from a text file: GLUE TSVs or one text per line.

GLUE TSVs are read the way GLUE's processors read them: tab-separated, no quoting, UTF-8 with an
optional BOM (MRPC). Recognised layouts, by header:

- ``sentence`` (SST-2), ``sentence1``/``sentence2`` (RTE, STS-B), ``#1 String``/``#2 String`` (MRPC),
  ``question``/``sentence`` (QNLI);
- CoLA's headerless 4-column layout (``source, label, orig_label, sentence``).

Any other file must have one column: one example per non-empty line. Files that are not UTF-8
text, headerless files with several tab-separated columns, rows shorter than their header and
empty texts are refused with a DataError that says what to change.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from onnx_tokprune.errors import DataError

PAIR_COLUMNS = (("sentence1", "sentence2"), ("#1 String", "#2 String"), ("question", "sentence"))
SINGLE_COLUMNS = ("sentence",)
HEADER_HINT = (
    "give the file a header row naming the text column `sentence` (or `sentence1`/`sentence2` for pairs), "
    "or name its columns with --column-names (e.g. text,label) and the text with --text-column"
)
_UTF16_32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@dataclass(frozen=True)
class TextExample:
    text: str
    text_pair: str | None = None


def read_texts(path: str | os.PathLike, limit: int | None = None) -> list[TextExample]:
    """Read examples from `path` (see module docstring); the first `limit` when given (0/None = all).

    Raises DataError for a missing, empty, non-UTF-8 or binary file, an unrecognised multi-column
    layout, and empty texts among the examples returned.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: pass a GLUE .tsv or a text file with one sentence per line")
    text = _read_utf8(path)
    rows = [
        (line, row)
        for line, row in enumerate(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE), 1)
        if any(cell.strip() for cell in row)
    ]
    if not rows:
        raise DataError(f"{path} is empty: it needs at least one sentence")
    examples = _parse(path, rows)
    if not examples:
        raise DataError(f"{path} has a header but no examples")
    examples = examples[:limit] if limit else examples
    for line, example in examples:
        if not example.text.strip() or (example.text_pair is not None and not example.text_pair.strip()):
            raise DataError(f"{path}: line {line} has an empty text: fill it in or remove the line")
    return [example for _, example in examples]


def check_utf8_text(path: Path) -> None:
    """DataError unless the file is UTF-8 text (an optional BOM allowed), before a loader reads it."""
    _read_utf8(path)


def _read_utf8(path: Path) -> str:
    """The file's text; DataError unless it is UTF-8 text (an optional BOM allowed)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path} cannot be read: {e.strerror or e}") from None
    if data.startswith(_UTF16_32_BOMS):
        raise DataError(f"{path} is UTF-16/32 text: the file must be UTF-8 text; convert it, e.g. iconv -f utf-16 -t utf-8")
    if b"\x00" in data:
        offset = data.index(b"\x00")
        raise DataError(f"{path} has a NUL byte at offset {offset}, so it is not a text file: the file must be UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}): the file must be UTF-8 text; "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None


def _parse(path: Path, rows: list[tuple[int, list[str]]]) -> list[tuple[int, TextExample]]:
    """(line number, example) pairs by the layouts of the module docstring."""
    header = [c.strip() for c in rows[0][1]]
    for names in [*PAIR_COLUMNS, *((a,) for a in SINGLE_COLUMNS)]:
        if all(name in header for name in names):
            index = [header.index(name) for name in names]
            short = next(((line, row) for line, row in rows[1:] if len(row) <= max(index)), None)
            if short is not None:
                line, row = short
                raise DataError(
                    f"{path}: line {line} has {len(row)} tab-separated column(s) but the header names {len(header)}: fix or remove the line"
                )
            return [(line, TextExample(*(row[i] for i in index))) for line, row in rows[1:]]
    if all(len(r) == 4 and r[1] in ("0", "1") for _, r in rows[:5]):
        return [(line, TextExample(r[3])) for line, r in rows]
    wide = next(((line, row) for line, row in rows if len(row) > 1), None)
    if wide is not None:
        line, row = wide
        raise DataError(
            f"{path}: line {line} has {len(row)} tab-separated columns and no recognised header: {HEADER_HINT}, "
            "or put one text per line without tabs"
        )
    return [(line, TextExample(r[0].strip())) for line, r in rows]
