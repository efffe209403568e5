"""README table for LTP from the eval JSONs that tools/ltp_glue.sh writes (OUT/<task>_{ft,ltp}_eval.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/ltp")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mrpc"])
    args = parser.parse_args()
    lines = [
        "| task | metric | baseline | LTP (PyTorch drop) | LTP (mask) | LTP (ONNX artifact) | relative FLOPs | FLOPs reduction | thresholds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in args.tasks:
        out = Path(args.out)
        base = json.loads((out / f"{task}_ft_eval.json").read_text())[0]
        runs = {r["source"]: r for r in json.loads((out / f"{task}_ltp_eval.json").read_text())}
        config = json.loads((out / f"{task}_ltp" / "tokprune.json").read_text())
        metric = base["main_metric"]
        cells = [f"{100 * runs[s]['metrics'][metric]:.2f}" for s in ("pytorch-drop", "pytorch-mask", "onnxruntime")]
        rel = runs["pytorch-drop"]["relative_flops"]
        thresholds = ", ".join(f"L{r['layer']} {r['threshold']:.4f}" for r in config["layers"])
        lines.append(
            f"| {task} (dev {base['examples']}) | {metric} | {100 * base['metrics'][metric]:.2f} | {' | '.join(cells)} | {rel:.3f} | {1 / rel:.2f}× | {thresholds} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
