"""Latency of a pruned artifact vs the unpruned export of the same model, in one process.

Batch 1, unpadded real sentences, fixed threads. The pruned graph, the unpruned graph and the
*oracle* each run every sentence (median of `repeats` runs), scheduled by `timed_chunks` (16
sentences per graph in turn: warm caches, drift shared); the oracle is the
unpruned graph on the sentence's first L_eq tokens, where L_eq is the length whose unpruned FLOPs
equal the pruned run's FLOPs (from the kept tokens the graph reports). Removal efficiency =
sum(oracle) / sum(pruned): 1.0 means removing tokens inside the graph costs nothing beyond the
tokens it keeps (DESIGN.md §4).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tqdm.auto import tqdm

from onnx_tokprune.data.text import TextExample
from onnx_tokprune.flops import EncoderShape
from onnx_tokprune.runtime.session import KernelChoice, PrunedSession


@dataclass
class LatencyResult:
    data: str
    examples: int
    threads: int
    mean_tokens: float
    pruned_median_ms: float
    unpruned_median_ms: float
    oracle_median_ms: float
    speedup: float
    flops_reduction: float
    removal_efficiency: float
    cpu: str
    onnxruntime: str
    token_prune: str = "function"
    """"kernel" when the compiled TokenPrune kernel ran, "function" for the portable ONNX function."""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _shape(session: PrunedSession) -> EncoderShape:
    return EncoderShape.from_hf(json.loads((session.path / "config.json").read_text()))


def _kept_counts(outputs: dict[str, np.ndarray]) -> dict[int, float]:
    return {int(k.rsplit("_", 1)[1]): float((v >= 0).sum()) for k, v in outputs.items() if k.startswith("kept_index_")}


Feeds = dict[str, np.ndarray]
CHUNK = 16


class Runner:
    """One variant: a callable on encoded feeds returning {output name: array}."""

    def __init__(self, name: str, run: Callable[[Feeds], dict[str, np.ndarray]]) -> None:
        self.name, self.run = name, run

    def time(self, feeds: Feeds, repeats: int) -> tuple[float, dict[str, np.ndarray]]:
        times, out = [], {}
        for _ in range(repeats):
            start = time.perf_counter()
            out = self.run(feeds)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3, out


def cut(feeds: Feeds, length: int) -> Feeds:
    """`feeds` with every input cut to its first `length` tokens."""
    return {k: v[:, :length] for k, v in feeds.items()}


def timed_chunks(
    jobs: dict[str, list[tuple[Runner, Feeds]]], repeats: int, desc: str, progress: bool
) -> dict[str, list[tuple[float, dict[str, np.ndarray]]]]:
    """Time every job (median of `repeats` runs). Inputs go in chunks of CHUNK: within a chunk each
    key runs all its inputs before the next key starts (warm caches, as when one model serves),
    and the keys alternate chunk by chunk (so a machine's drift hits every key alike)."""
    results: dict[str, list[tuple[float, dict[str, np.ndarray]]]] = {key: [] for key in jobs}
    total = max((len(items) for items in jobs.values()), default=0)
    for start in tqdm(range(0, total, CHUNK), desc=desc, disable=not progress):
        for key, items in jobs.items():
            for runner, feeds in items[start : start + CHUNK]:
                results[key].append(runner.time(feeds, repeats))
    return results


def measure_latency(
    pruned_dir: str | Path,
    baseline_dir: str | Path,
    examples: Sequence[TextExample],
    data_name: str = "",
    threads: int = 2,
    repeats: int = 5,
    progress: bool = True,
    kernel_library: KernelChoice = None,
) -> LatencyResult:
    """Time pruned vs unpruned vs oracle at batch 1 on `examples` (see module docstring).
    `kernel_library` is the pruned session's TokenPrune kernel choice (see PrunedSession)."""
    pruned = PrunedSession(pruned_dir, threads=threads, spinning=False, kernel_library=kernel_library)
    baseline = PrunedSession(baseline_dir, threads=threads, spinning=False)
    rows = pruned.text_encoder.token_ids(examples)
    shape = _shape(pruned)
    singles = [pruned.text_encoder.pad([row]) for row in rows]
    f_base = [shape.flops(len(row[0])) for row in rows]
    f_pruned = [shape.flops(len(row[0]), _kept_counts(pruned.run(f))) for row, f in zip(rows, singles)]
    oracle = [cut(f, max(1, min(len(row[0]), int(round(shape.equivalent_length(fl)))))) for row, f, fl in zip(rows, singles, f_pruned)]
    p_run, b_run = Runner("pruned", pruned.run), Runner("unpruned", baseline.run)
    timed = timed_chunks(
        {"pruned": [(p_run, f) for f in singles], "unpruned": [(b_run, f) for f in singles], "oracle": [(b_run, f) for f in oracle]},
        repeats, f"latency {data_name}".strip(), progress,
    )
    t_pruned, t_base, t_oracle = ([t for t, _ in timed[k]] for k in ("pruned", "unpruned", "oracle"))
    return LatencyResult(
        data=data_name,
        examples=len(rows),
        threads=threads,
        mean_tokens=float(np.mean([len(r[0]) for r in rows])),
        pruned_median_ms=statistics.median(t_pruned),
        unpruned_median_ms=statistics.median(t_base),
        oracle_median_ms=statistics.median(t_oracle),
        speedup=sum(t_base) / sum(t_pruned),
        flops_reduction=sum(f_base) / sum(f_pruned),
        removal_efficiency=sum(t_oracle) / sum(t_pruned),
        cpu=cpu_model(),
        onnxruntime=ort.__version__,
        token_prune="kernel" if pruned.kernel_library else "function",
    )


def latency_table(results: Sequence[LatencyResult]) -> str:
    """Markdown table of latency results."""
    head = "| data | sentences | mean tokens | unpruned ms (median) | pruned ms (median) | speedup | FLOPs reduction | oracle ms (median) | removal efficiency |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.data} | {r.examples} | {r.mean_tokens:.1f} | {r.unpruned_median_ms:.2f} | {r.pruned_median_ms:.2f} | "
            f"{r.speedup:.2f}× | {r.flops_reduction:.2f}× | {r.oracle_median_ms:.2f} | {r.removal_efficiency:.2f} |"
        )
    if results:
        lines.append(f"\nCPU: {results[0].cpu}; onnxruntime {results[0].onnxruntime}; {results[0].threads} intra-op threads; batch 1.")
    return "\n".join(lines)


def to_json(results: Sequence[LatencyResult]) -> list[dict]:
    return [asdict(r) for r in results]
