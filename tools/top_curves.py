"""PNG of a ToP run's constraint: expected relative FLOPs vs the ramped target, the Lagrange
multipliers and the ranking loss over training steps (from the checkpoint's top_gates.json history).

Usage: python tools/top_curves.py out/top/sst2_top [out/top/mrpc_top ...] --png out/top/top_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

from onnx_tokprune.training.constraint import GateState

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--png", type=Path, default=Path("out/top/top_curves.png"))
    args = parser.parse_args()
    fig, axes = plt.subplots(3, len(args.checkpoints), figsize=(5 * len(args.checkpoints), 9), squeeze=False, sharex="col")
    for col, ckpt in enumerate(args.checkpoints):
        provenance = json.loads((ckpt / "tokprune.json").read_text())["provenance"]
        history = GateState.load(ckpt, provenance).history
        steps = [h["step"] for h in history]
        top, mid, low = axes[0][col], axes[1][col], axes[2][col]
        top.plot(steps, [h["expected_flops"] for h in history], label="expected relative FLOPs")
        top.plot(steps, [h["target_flops"] for h in history], "--", label="target (ramped)")
        top.set_title(f"ToP {provenance['task']} (target {provenance['target_flops']})")
        top.set_ylim(0, 1.05)
        top.legend()
        mid.plot(steps, [h["lambda1"] for h in history], label="λ1")
        mid.plot(steps, [h["lambda2"] for h in history], label="λ2")
        mid.legend()
        low.plot(steps, [h["rank_loss"] for h in history], label="ranking loss (ARP-2 / K²)")
        low.set_xlabel("training step")
        low.legend()
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
