"""Latency table for the README: pruned vs unpruned onnxruntime at batch 1, SST-2 and RTE dev.

Expects the artifacts that tools/demo.sh writes (OUT/minilm_<task>_cal50-onnx and
OUT/minilm_<task>_cal50-unpruned-onnx). Prints the Markdown table and writes OUT/latency.{md,json}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnx_tokprune.io import write_json_atomic
from onnx_tokprune.data.text import read_texts
from onnx_tokprune.bench.latency import latency_table, measure_latency, to_json

TASKS = {"SST-2": "sst2", "RTE": "rte"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="directory holding the demo artifacts")
    parser.add_argument("--data", default="../shared/data/glue", help="GLUE directory")
    parser.add_argument("--samples", type=int, default=200, help="dev sentences per task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    out = Path(args.out)
    results = []
    for task, name in TASKS.items():
        ckpt = out / f"minilm_{name}_cal50"
        examples = read_texts(Path(args.data) / task / "dev.tsv", limit=args.samples)
        results.append(
            measure_latency(f"{ckpt}-onnx", f"{ckpt}-unpruned-onnx", examples, task, args.threads, args.repeats)
        )
    table = latency_table(results)
    print(table)
    (out / "latency.md").write_text(table + "\n")
    write_json_atomic(out / "latency.json", to_json(results))
    print(json.dumps({r.data: round(r.removal_efficiency, 3) for r in results}))


if __name__ == "__main__":
    main()
