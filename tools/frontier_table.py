"""The README's frontier results table: per task and method, the fastest point within 1 metric point of
the fine-tuned model (fp32 and INT8), from the frontiers tools/frontier.sh wrote, and each task against
the speed aims of the frontier issue (trained pruning, LTP or ToP, within 1 point).

    python tools/frontier_table.py sst2 mrpc rte        (reads out/frontier/TASK/frontier.json)
"""

from __future__ import annotations

import sys

from onnx_tokprune.errors import CheckpointError
from onnx_tokprune.frontier import LOSS_BUDGET, evaluation_noise, latency_fit, read, results_markdown

AIMS = {"sst2": (1.6, None), "mrpc": (2.5, 4.0), "rte": (2.5, 4.0)}
"""task -> (fp32 speedup, INT8 speedup) the issue aims at for LTP/ToP within 1 point (None: no aim)."""
TRAINED = ("LTP", "ToP")


def aim_line(frontier) -> str:
    fp32_aim, int8_aim = AIMS.get(frontier.task, (None, None))
    best = [p for p in frontier.best() if p.method in TRAINED]
    parts = []
    for precision, aim in (("fp32", fp32_aim), ("int8", int8_aim)):
        top = max((p for p in best if p.precision == precision), key=lambda p: p.speedup, default=None)
        got = f"{top.speedup:.2f}× ({top.method} {top.name})" if top else "no LTP/ToP point within 1 point"
        verdict = "" if aim is None else (" — aim ≥ %.1f× %s" % (aim, "met" if top and top.speedup >= aim else "not met"))
        parts.append(f"{precision} {got}{verdict}{requirement(frontier, precision, aim)}")
    return f"- {frontier.task}: " + "; ".join(parts)


def requirement(frontier, precision: str, aim: float | None) -> str:
    """What the aim asks of pruning on this task and machine, from the pruned points' latency fit."""
    fit = latency_fit(frontier, precision)
    if aim is None or fit is None:
        return ""
    need = fit.flops_for(aim)
    text = f" (pruning the baseline's layers needs {need:.2f} relative FLOPs for it, by the latency fit" if need > 0 else f" (beyond pruning's {fit.ceiling:.1f}× ceiling"
    floor = frontier.floors.get("1")
    if floor is not None:
        text += f"; pruning from layer 1 reaches at most {fit.speedup_at(floor):.2f}× at its {floor:.3f} floor"
    return text + ")"


def main(tasks: list[str]) -> None:
    try:
        frontiers = [read(f"out/frontier/{task}") for task in tasks]
    except CheckpointError as e:
        raise SystemExit(str(e)) from None
    print(results_markdown(frontiers))
    print(f"\nTrained pruning within {LOSS_BUDGET:g} point, fastest:")
    for frontier in frontiers:
        print(aim_line(frontier))
    print()
    for frontier in frontiers:
        print(f"- {frontier.task}: {evaluation_noise(frontier)}")
    cpus = {f"{f.environment['cpu']} ({', '.join(f.environment['isa'])}), {f.environment['threads']} threads" for f in frontiers}
    print("\nCPU: " + "; ".join(sorted(cpus)))


if __name__ == "__main__":
    main(sys.argv[1:] or ["sst2", "mrpc", "rte"])
