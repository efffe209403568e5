"""The README's SQuAD table from tools/squad.sh's outputs (eval JSONs and bench reports under out/).

    python tools/squad_table.py squad_cal06 squad_ltp05 squad_top05
    python tools/squad_table.py            # every checkpoint with an out/squad/eval_NAME.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def label(name: str) -> str:
    """"squad_cal06" -> "calibrated 0.6"; "squad_ltp05" -> "LTP (target 0.5)"."""
    kind, digits = name.removeprefix("squad_")[:3], name.removeprefix("squad_")[3:]
    target = f"0.{digits[1:]}" if digits else "?"
    return {"cal": f"calibrated {target}", "ltp": f"LTP (init {target})", "top": f"ToP (target {target})"}.get(kind, name)


def evaluated(out: Path) -> list[str]:
    """The checkpoint names tools/squad.sh evaluated: out/squad/eval_NAME.json, without its -int8 / -protected variants."""
    names = {p.stem.removeprefix("eval_") for p in out.glob("eval_squad_*.json")}
    return sorted(n for n in names if not n.endswith(("-int8", "-protected")))


def main(names: list[str]) -> None:
    out = Path("out/squad")
    names = names or evaluated(out)
    base = load(out / "eval_unpruned.json")
    if base is None:
        raise SystemExit("out/squad/eval_unpruned.json is missing: run tools/squad.sh first")
    ref = base[0]
    print("| model | relative FLOPs | EM | F1 | ΔF1 | kept tokens per pruning layer (of mean) | speedup fp32 b1 / b8 | speedup INT8 b1 / b8 | removal efficiency fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| fine-tuned, unpruned (PyTorch) | 1.000 | {ref['exact_match']:.2f} | {ref['f1']:.2f} | — | — ({ref['mean_tokens']:.1f}) | 1.00× | — | — |")
    for name in names:
        rows = load(out / f"eval_{name}.json") or []
        int8 = load(out / f"eval_{name}-int8.json") or []
        protected = load(out / f"eval_{name}-protected.json") or []
        bench = load(Path("out") / f"{name}-bench" / "bench.json")
        speed = {}
        if bench:
            speed = {v["variant"]: v for v in bench["results"][0]["variants"]}
        for r in rows + protected + int8:
            source = r["source"] + (" INT8" if r in int8 else "") + (", question protected" if r in protected else "")
            kept = ", ".join(f"L{k}: {v:.1f}" for k, v in r["kept_tokens"].items())
            fp32 = f"{speed['pruned fp32']['speedup']:.2f}× / {speed['pruned fp32']['batch8_speedup']:.2f}×" if speed and r["source"] == "onnxruntime" and r not in int8 else ""
            q8 = f"{speed['pruned int8']['speedup']:.2f}× / {speed['pruned int8']['batch8_speedup']:.2f}×" if speed and r in int8 else ""
            eff = f"{speed['pruned fp32']['removal_efficiency']:.2f}" if fp32 else ""
            print(f"| {label(name)}: {source} | {r['relative_flops']:.3f} | {r['exact_match']:.2f} | {r['f1']:.2f} | {r['f1'] - ref['f1']:+.2f} "
                  f"| {kept} ({r['mean_tokens']:.1f}) | {fp32} | {q8} | {eff} |")
    if bench:
        print(f"\nunpruned INT8 (fused): {speed['unpruned int8']['speedup']:.2f}× / {speed['unpruned int8']['batch8_speedup']:.2f}×; CPU: {bench['cpu']}, {bench['threads']} threads")


if __name__ == "__main__":
    main(sys.argv[1:])
