"""Markdown table of fp32 vs INT8 accuracy, both INT8 settings, from `tokprune-eval --json` files
(tools/int8_accuracy.sh, tools/int8_settings.sh).

Usage: python tools/int8_table.py "TASK METHOD FP32.json PORTABLE.json VNNI.json" ... --output OUT.md
Each JSON is a list of evaluations; the onnxruntime one (the artifact) is read. The CPU the
evaluations ran on is printed under the table: the vnni column is only right on a VNNI CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from onnx_tokprune.io import write_text_atomic


def artifact_result(path: str) -> dict:
    results = [r for r in json.loads(Path(path).read_text()) if r["source"] == "onnxruntime"]
    if not results:
        raise SystemExit(f"{path} holds no onnxruntime evaluation: run tokprune-eval with --artifact")
    return results[0]


def cpu_line() -> str:
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags)
    return f"CPU: {model} (ISA: {isa or 'unknown'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help='"TASK METHOD FP32.json PORTABLE.json VNNI.json"')
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    lines = [
        "| task | method | metric | fp32 | INT8 portable (7-bit weights) | Δ | INT8 vnni (8-bit weights) | Δ | relative FLOPs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in args.runs:
        task, method, *paths = run.split()
        fp32, portable, vnni = (artifact_result(p) for p in paths)
        metric = fp32["main_metric"]
        a, b, c = (100 * r["metrics"][metric] for r in (fp32, portable, vnni))
        lines.append(
            f"| {task} (dev {fp32['examples']}) | {method} | {metric} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {c:.2f} | {c - a:+.2f} | "
            f"{fp32['relative_flops']:.3f} |"
        )
    text = "\n".join(lines) + "\n\n" + cpu_line() + "\n"
    write_text_atomic(args.output, text)
    print(text, end="")


if __name__ == "__main__":
    main()
