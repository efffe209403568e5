"""README table: baseline vs LTP vs ToP on the same fine-tuned MiniLM, per task.

Reads the eval JSONs of tools/ltp_glue.sh (LTP_OUT/<task>_{ft,ltp}_eval.json) and tools/top_glue.sh
(TOP_OUT/<task>_top_eval.json), then times the LTP and ToP artifacts against the task's unpruned
export (LTP_OUT/<task>_ft-unpruned-onnx: fused by onnxruntime in the current scripts) in one process
(batch 1, median of repeats, thread spinning off, chunked schedule; `bench.latency`).
Prints the Markdown table and writes TOP_OUT/methods.{md,json}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnx_tokprune.io import write_json_atomic
from onnx_tokprune.data.text import read_texts
from onnx_tokprune.bench.latency import measure_latency, to_json
from onnx_tokprune.runtime.kernel import find_kernel

DEV = {"sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE", "cola": "CoLA", "stsb": "STS-B"}


def _runs(path: Path) -> dict:
    return {r["source"]: r for r in json.loads(path.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ltp-out", default="out/ltp")
    parser.add_argument("--top-out", default="out/top")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mrpc"])
    parser.add_argument("--data", default="../shared/data/glue", help="GLUE directory (latency sentences)")
    parser.add_argument("--samples", type=int, default=200, help="dev sentences timed per task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ltp_out, top_out = Path(args.ltp_out), Path(args.top_out)
    kernel = find_kernel()
    choices = [("function", False)] + ([("kernel", kernel)] if kernel else [])
    head = ["task", "method", "metric", "PyTorch (drop)", "ONNX artifact", "relative FLOPs", "FLOPs reduction"]
    for name, _ in choices:
        head += [f"speedup ({name})", f"removal efficiency ({name})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    timings = []
    for task in args.tasks:
        base = json.loads((ltp_out / f"{task}_ft_eval.json").read_text())[0]
        metric = base["main_metric"]
        lines.append(f"| {task} (dev {base['examples']}) | baseline | {metric} | {100 * base['metrics'][metric]:.2f} | | 1.000 | 1.00× |" + " 1.00× | |" * len(choices))
        examples = read_texts(Path(args.data) / DEV[task] / "dev.tsv", limit=args.samples)
        baseline = ltp_out / f"{task}_ft-unpruned-onnx"
        for method, eval_file, artifact in (
            ("LTP", ltp_out / f"{task}_ltp_eval.json", ltp_out / f"{task}_ltp-onnx"),
            ("ToP", top_out / f"{task}_top_eval.json", top_out / f"{task}_top-onnx"),
        ):
            runs = _runs(eval_file)
            drop, onnx = runs["pytorch-drop"], runs["onnxruntime"]
            rel = drop["relative_flops"]
            cells = [task, method, metric, f"{100 * drop['metrics'][metric]:.2f}", f"{100 * onnx['metrics'][metric]:.2f}", f"{rel:.3f}", f"{1 / rel:.2f}×"]
            for name, library in choices:
                timing = measure_latency(
                    artifact, baseline, examples, f"{DEV[task]} {method} ({name})", args.threads, args.repeats, kernel_library=library
                )
                timings.append(timing)
                cells += [f"{timing.speedup:.2f}×", f"{timing.removal_efficiency:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    footer = (
        f"\nCPU: {timings[0].cpu}; onnxruntime {timings[0].onnxruntime}; {args.threads} intra-op threads; batch 1; "
        f"latency over the first {args.samples} dev sentences, each the median of {args.repeats} runs, pruned, unpruned and "
        "oracle taking turns 16 sentences at a time in one process (bench.timing.timed_chunks). Speedup is the unpruned export's time over the pruned one's; removal efficiency "
        "is the time of the unpruned graph on as many tokens as give the pruned run's FLOPs over the pruned time. "
        "(function) = TokenPrune and ScoredAttention as their portable ONNX functions, (kernel) = the compiled kernels (custom_ops/)."
    )
    print(table + footer)
    (top_out / "methods.md").write_text(table + footer + "\n")
    write_json_atomic(top_out / "methods.json", to_json(timings))


if __name__ == "__main__":
    main()
