"""Split a SQuAD JSON file by article into training and evaluation files (the fixed rule of
onnx_tokprune.data.squad.split_articles: article i, in file order, is evaluation data when i % 4 == 3).

    python tools/squad_split.py ../shared/data/squad/dev-v1.1.json out/squad
writes out/squad/train.json and out/squad/eval.json (official SQuAD format) and prints their sizes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from onnx_tokprune.data.squad import is_squad_json, split_articles
from onnx_tokprune.io import write_json_atomic


def main(source: str, output: str) -> None:
    data = json.loads(Path(source).read_text(encoding="utf-8"))
    if not is_squad_json(data):
        sys.exit(f"{source} is not a SQuAD JSON file ({{\"data\": [{{\"title\", \"paragraphs\"}}]}})")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for part in ("train", "eval"):
        split = split_articles(data, part)
        target = out / f"{part}.json"
        if target.exists():
            sys.exit(f"{target} exists: remove it first")
        write_json_atomic(target, split)
        questions = sum(len(p["qas"]) for a in split["data"] for p in a["paragraphs"])
        print(f"{target}: {len(split['data'])} articles, {questions} questions")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tools/squad_split.py SQUAD_JSON OUTPUT_DIR")
    main(*sys.argv[1:])
