"""Latency of a pruned artifact vs the unpruned export of the same model, in one process.

Batch 1, unpadded real sentences, fixed threads. The pruned graph, the unpruned graph and the
*oracle* each run every sentence (median of `repeats` runs), scheduled by `timed_chunks` (16
sentences per graph in turn: warm caches, drift shared); the oracle is the
unpruned graph on the sentence's first L_eq tokens, where L_eq is the length whose unpruned FLOPs
equal the pruned run's FLOPs (from the kept tokens the graph reports). Removal efficiency =
sum(oracle) / sum(pruned): 1.0 means removing tokens inside the graph costs nothing beyond the
tokens it keeps (docs/design.md §4).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnx_tokprune.artifact import kept_counts
from onnx_tokprune.bench.timing import Runner, cpu_model, oracle_feeds, timed_chunks
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
    shape = EncoderShape.from_hf(pruned.artifact.hf_config)
    singles = [pruned.text_encoder.pad([row]) for row in rows]
    f_base = [shape.flops(len(row[0])) for row in rows]
    f_pruned = [shape.flops(len(row[0]), kept_counts(pruned.run(f))) for row, f in zip(rows, singles)]
    oracle = [oracle_feeds(shape, f, fl) for f, fl in zip(singles, f_pruned)]
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
