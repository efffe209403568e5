"""Markdown table of fp32 vs INT8 accuracy from `tokprune-eval --json` files (tools/int8_accuracy.sh).

Usage: python tools/int8_table.py "TASK METHOD FP32.json INT8.json" ... --output OUT.md
Each JSON is a list of evaluations; the onnxruntime one (the artifact) is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def artifact_result(path: str) -> dict:
    results = [r for r in json.loads(Path(path).read_text()) if r["source"] == "onnxruntime"]
    if not results:
        raise SystemExit(f"{path} holds no onnxruntime evaluation: run tokprune-eval with --artifact")
    return results[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help='"TASK METHOD FP32.json INT8.json"')
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    lines = [
        "| task | method | metric | fp32 (fused) | INT8 (fused) | Δ | relative FLOPs fp32 | relative FLOPs INT8 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in args.runs:
        task, method, fp32_path, int8_path = run.split()
        fp32, int8 = artifact_result(fp32_path), artifact_result(int8_path)
        metric = fp32["main_metric"]
        a, b = 100 * fp32["metrics"][metric], 100 * int8["metrics"][metric]
        lines.append(
            f"| {task} (dev {fp32['examples']}) | {method} | {metric} | {a:.2f} | {b:.2f} | {b - a:+.2f} | "
            f"{fp32['relative_flops']:.3f} | {int8['relative_flops']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    Path(args.output).write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
