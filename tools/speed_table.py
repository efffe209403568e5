"""Table for tools/speed_matrix.sh: each pruned artifact (fp32, INT8) and the unpruned INT8 export
against the unpruned fp32 export, batch 1, compiled kernel registered when built."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnx_tokprune.config import write_json_atomic
from onnx_tokprune.data.text import read_texts
from onnx_tokprune.runtime.bench import measure_latency, to_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/speed")
    parser.add_argument("--data", default="../shared/data/glue")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    out = Path(args.out)
    head = "| data | artifact | token_prune | mean tokens | pruned ms | unpruned fp32 ms | speedup | FLOPs reduction | removal efficiency |"
    lines = [head, "|" + "---|" * 9]
    results = []
    for task in ("SST-2", "RTE"):
        examples = read_texts(Path(args.data) / task / "dev.tsv", limit=args.samples)
        baseline = out / f"{task}-unpruned-onnx"
        for name in ("unpruned-int8", "f0.5", "f0.5-int8", "f0.25", "f0.25-int8"):
            artifact = out / (f"{task}-{name}-onnx" if name.startswith("unpruned") else f"{task}_{name}-onnx")
            r = measure_latency(artifact, baseline, examples, f"{task} {name}", args.threads, args.repeats)
            results.append(r)
            eff = f"{r.removal_efficiency:.2f}" if not name.startswith("unpruned") else ""
            lines.append(
                f"| {task} | {name} | {r.token_prune} | {r.mean_tokens:.1f} | {r.pruned_median_ms:.2f} | {r.unpruned_median_ms:.2f} | "
                f"{r.speedup:.2f}× | {r.flops_reduction:.2f}× | {eff} |"
            )
    footer = f"\nCPU: {results[0].cpu}; onnxruntime {results[0].onnxruntime}; {args.threads} threads; batch 1; medians of {args.repeats} runs over {args.samples} dev sentences."
    print("\n".join(lines) + footer)
    (out / "speed.md").write_text("\n".join(lines) + footer + "\n")
    write_json_atomic(out / "speed.json", to_json(results))


if __name__ == "__main__":
    main()
