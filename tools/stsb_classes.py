"""Make a 3-class CSV dataset from the shared STS-B pairs, for the README's "Your own data" example.

Each pair's similarity score (0-5) becomes a named class: `unrelated` (< 2), `related` (2 to < 4),
`paraphrase` (>= 4). Writes train.csv and validation.csv (columns first, second, similarity) from
STS-B train.tsv and dev.tsv. Usage: python tools/stsb_classes.py [--glue ../shared/data/glue] [--out out/own_data]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

BINS = ((2.0, "unrelated"), (4.0, "related"), (float("inf"), "paraphrase"))


def label(score: float) -> str:
    return next(name for upper, name in BINS if score < upper)


def convert(source: Path, target: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open(source, encoding="utf-8", newline="") as f, open(target, "w", encoding="utf-8", newline="") as out:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        writer = csv.writer(out)
        writer.writerow(["first", "second", "similarity"])
        for row in reader:
            name = label(float(row["score"]))
            counts[name] = counts.get(name, 0) + 1
            writer.writerow([row["sentence1"], row["sentence2"], name])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--out", type=Path, default=Path("out/own_data"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.csv"), ("dev", "validation.csv")):
        counts = convert(args.glue / "STS-B" / f"{split}.tsv", args.out / name)
        print(f"wrote {args.out / name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
