"""Table and PNG of the long-input benchmark (tools/long_inputs.sh): per FLOPs target and input length,
speedup and removal efficiency of the pruned fp32 and INT8 graphs at batch 1 and 8 against the fused
unpruned fp32 export; the CLS-only last layer beside the same artifact without it.

    python tools/long_table.py out/long     # prints the Markdown table, writes out/long/long_inputs.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LENGTH_OF = {"ctx128": 128, "ctx256": 256, "ctx384": 384, "ctx512": 512}


def reports(root: Path) -> dict[str, dict]:
    found = {}
    for bench in sorted(root.glob("cal*-onnx-bench/bench.json")):
        found[bench.parent.name.removesuffix("-onnx-bench")] = json.loads(bench.read_text())
    if not found:
        raise SystemExit(f"no cal*-onnx-bench/bench.json under {root}: run tools/long_inputs.sh first")
    return found


def label(name: str) -> str:
    """"cal05-cls" (tools/long_inputs.sh: calibrated at 0.5) -> "2× target, CLS-only last layer"."""
    target = float("0." + name.removeprefix("cal").removesuffix("-cls")[1:])
    return f"{1 / target:.3g}× target" + (", CLS-only last layer" if name.endswith("-cls") else "")


def table(found: dict[str, dict]) -> str:
    lines = [
        "| artifact | tokens | FLOPs reduction | fp32 speedup b1 / b8 | INT8 speedup b1 / b8 | removal efficiency fp32 / INT8 | unpruned fp32 ms (b1) | pruned fp32 ms (b1) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, report in found.items():
        for result in report["results"]:
            v = {x["variant"]: x for x in result["variants"]}
            fp32, int8, base = v["pruned fp32"], v["pruned int8"], v["unpruned fp32"]
            lines.append(
                f"| {label(name)} | {LENGTH_OF.get(result['data'], result['mean_tokens']):.0f} | {fp32['flops_reduction']:.2f}× | "
                f"{fp32['speedup']:.2f}× / {fp32['batch8_speedup']:.2f}× | {int8['speedup']:.2f}× / {int8['batch8_speedup']:.2f}× | "
                f"{fp32['removal_efficiency']:.2f} / {int8['removal_efficiency']:.2f} | {base['batch1_median_ms']:.1f} | {fp32['batch1_median_ms']:.1f} |"
            )
    first = next(iter(found.values()))
    lines.append(f"\nCPU: {first['cpu']}; {first['threads']} threads; onnxruntime {first['onnxruntime']}; TokenPrune: {first['token_prune']}; "
                 f"medians of {first['repeats']} runs per input; {first['results'][0]['sentences']} texts per length.")
    return "\n".join(lines)


def cls_only_gain(found: dict[str, dict]) -> str:
    """Per length, the CLS-only artifact's batch-1 / batch-8 speed against the same artifact without it
    (both measured against their own unpruned run in the same process, so the ratio of the speedups)."""
    lines = []
    for name, report in found.items():
        base = found.get(name.removesuffix("-cls"))
        if not name.endswith("-cls") or base is None:
            continue
        lines += ["| artifact | tokens | CLS-only vs full last layer, fp32 b1 / b8 | INT8 b1 / b8 |", "|---|---|---|---|"]
        for with_cls, without in zip(report["results"], base["results"]):
            a = {x["variant"]: x for x in with_cls["variants"]}
            b = {x["variant"]: x for x in without["variants"]}
            ratios = [a[f"pruned {p}"][k] / b[f"pruned {p}"][k] for p in ("fp32", "int8") for k in ("speedup", "batch8_speedup")]
            lines.append(f"| {label(name)} | {LENGTH_OF.get(with_cls['data'], with_cls['mean_tokens']):.0f} | "
                         f"{ratios[0]:.2f}× / {ratios[1]:.2f}× | {ratios[2]:.2f}× / {ratios[3]:.2f}× |")
    return "\n".join(lines)


def plot(found: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, precision in zip(axes, ("fp32", "int8")):
        drawn = False
        for name, report in found.items():
            xs = [LENGTH_OF.get(r["data"], r["mean_tokens"]) for r in report["results"]]
            variants = [{x["variant"]: x for x in r["variants"]} for r in report["results"]]
            if not drawn:
                ax.plot(xs, [v[f"unpruned {precision}"]["batch1_median_ms"] for v in variants], "k-o", label=f"unpruned {precision} (fused)")
                drawn = True
            ax.plot(xs, [v[f"pruned {precision}"]["batch1_median_ms"] for v in variants], "--o" if name.endswith("-cls") else "-o",
                    label=f"pruned {precision}, {label(name)}")
        ax.set_xlabel("input tokens (SQuAD contexts)")
        ax.set_ylabel("batch-1 latency, median ms")
        ax.set_title(f"{precision}: latency against length")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    first = next(iter(found.values()))
    fig.suptitle(f"MiniLM-L6, calibrated top-k pruning: {first['cpu']}, {first['threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(root: str) -> None:
    found = reports(Path(root))
    print(table(found))
    gain = cls_only_gain(found)
    if gain:
        print("\n" + gain)
    plot(found, Path(root) / "long_inputs.png")
    print(f"\nwrote {Path(root) / 'long_inputs.png'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/long")
