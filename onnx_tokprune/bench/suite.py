"""`tokprune-bench`: a pruned artifact against the baselines a practitioner would otherwise deploy.

In one process, with fixed threads, on unpadded real sentences, five variants:

- ``unpruned fp32``: the HF model exported and fully fused by onnxruntime (export.baseline);
- ``unpruned int8``: the same, dynamic per-channel QInt8 (QAttention, MatMulInteger);
- ``pruned fp32``: the artifact as exported;
- ``pruned int8``: the artifact's graph through export.quantize.to_int8;
- ``pytorch eager``: the unpruned HF model in PyTorch.

Batch 1: every sentence through every variant (median of `repeats` runs each); the table gives
the median and p90 over sentences and speedup = Σ unpruned fp32 / Σ variant. Fixed cost: the
sentences cut to their first 8 tokens. Batch 8: consecutive sentences, ragged, padded to the batch's
longest (the pruned graphs get the same padded batch and its attention mask); sentences/s.
Scheduling (`bench.timing.timed_chunks`): inputs in chunks of 16; within a chunk one variant runs all of them before
the next (warm caches, as a server running one model has), variants alternate chunk by chunk (drift
hits all alike). PyTorch runs after all onnxruntime timing (its spinning OpenMP workers slow the
session that follows).
FLOPs come from the kept tokens each pruned graph reports (flops.EncoderShape). Removal efficiency
(docs/design.md §4) = Σ oracle / Σ pruned, the oracle being the unpruned graph of the same precision on
the sentence's first L_eq tokens, L_eq the length whose unpruned FLOPs equal the pruned run's.
The reference curve times the unpruned graphs on every sentence cut to a fraction of its FLOPs.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnx_tokprune.architectures import spec_for
from onnx_tokprune.artifact import HEADS, kept_counts, read_artifact
from onnx_tokprune.bench.timing import ISA_FLAGS, Feeds, Runner, cpu_model, cut, isa_flags, oracle_feeds, timed_chunks
from onnx_tokprune.data.text import TextExample
from onnx_tokprune.errors import ArtifactError
from onnx_tokprune.flops import EncoderShape
from onnx_tokprune.runtime.session import KernelChoice, PrunedSession, session_options
from onnx_tokprune.runtime.text_encoder import TextEncoder

VARIANTS = ("unpruned fp32", "unpruned int8", "pruned fp32", "pruned int8", "pytorch eager")
ORACLE_OF = {"pruned fp32": "unpruned fp32", "pruned int8": "unpruned int8"}
CURVE_FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0)
FIXED_COST_TOKENS = 8


@dataclass
class VariantResult:
    variant: str
    batch1_median_ms: float
    batch1_p90_ms: float
    speedup: float
    """Σ unpruned fp32 batch-1 time / Σ this variant's."""
    batch8_per_s: float
    batch8_speedup: float
    flops_reduction: float
    fixed_cost_ms: float
    """Median batch-1 latency on sentences cut to FIXED_COST_TOKENS tokens: the per-run fixed cost."""
    removal_efficiency: float | None = None
    oracle_median_ms: float | None = None


@dataclass
class DataResult:
    data: str
    sentences: int
    mean_tokens: float
    variants: list[VariantResult]
    curve: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per unpruned variant: (relative FLOPs, mean batch-1 ms) with every sentence cut to a fraction of its FLOPs."""
    points: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per variant: per-sentence (FLOPs / mean unpruned FLOPs, batch-1 ms)."""


@dataclass
class BenchReport:
    artifact: str
    checkpoint: str
    threads: int
    repeats: int
    cpu: str
    isa: list[str]
    onnxruntime: str
    torch: str
    token_prune: str
    results: list[DataResult]
    command: str = ""
    pruned_graph: str = ""
    """The artifact's pruning layers and the passes it was exported with."""


def _ort_runner(name: str, model: onnx.ModelProto, threads: int, kernel: str | None) -> Runner:
    session = ort.InferenceSession(
        model.SerializeToString(), session_options(threads, kernel, spinning=False), providers=["CPUExecutionProvider"]
    )
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, {k: feeds[k] for k in inputs})))

    return Runner(name, run)


def _torch_runner(hf_model, threads: int, head: str) -> Runner:
    import torch

    torch.set_num_threads(threads)
    inputs = spec_for(hf_model.config).inputs

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = hf_model(**{k: torch.from_numpy(feeds[k]) for k in inputs})
        return {name: getattr(out, name).numpy() for name in HEADS[head]}

    return Runner("pytorch eager", run)


def _pruned_artifact(artifact: Path, threads: int, kernel_library: KernelChoice) -> tuple[PrunedSession, str | None]:
    """(the session, the kernel library or None) of a pruned fp32 artifact that onnxruntime can open;
    ArtifactError otherwise."""
    session = PrunedSession(artifact, threads, kernel_library, spinning=False)
    export = session.manifest.export
    if export.int8:
        raise ArtifactError(f"{artifact} is an INT8 artifact: pass the fp32 one (the bench builds the INT8 variants itself)")
    if not export.pruning_layers:
        raise ArtifactError(f"{artifact} does not prune: pass a pruned artifact (the bench builds the unpruned baselines)")
    return session, str(session.kernel_library) if session.kernel_library else None


def build_variants(
    artifact: str | os.PathLike, checkpoint: str | os.PathLike | None, threads: int, kernel_library: KernelChoice = None
) -> tuple[dict[str, Runner], str, str]:
    """The five variants of the module docstring; returns (runners, checkpoint, "kernel"|"function")."""
    from onnx_tokprune.export.baseline import export_unpruned_optimized, quantize_unpruned_optimized
    from onnx_tokprune.export.quantize import to_int8
    from onnx_tokprune.modeling import load_classifier

    artifact = Path(artifact)
    session, kernel = _pruned_artifact(artifact, threads, kernel_library)
    checkpoint = checkpoint or session.manifest.export.source
    if not checkpoint or not (Path(checkpoint) / "config.json").is_file():
        raise ArtifactError(f"checkpoint {checkpoint!r} of {artifact} not found: pass it with --model")

    head = session.head
    hf_model = load_classifier(checkpoint, kinds=(head,))
    eager = _torch_runner(hf_model, threads, head)
    fused, _ = export_unpruned_optimized(hf_model, head=head)
    pruned = onnx.load(str(session.artifact.model_file))
    pruned_int8, _ = to_int8(pruned)
    runners = {
        "unpruned fp32": _ort_runner("unpruned fp32", fused, threads, None),
        "unpruned int8": _ort_runner("unpruned int8", quantize_unpruned_optimized(fused)[0], threads, None),
        "pruned fp32": _ort_runner("pruned fp32", pruned, threads, kernel),
        "pruned int8": _ort_runner("pruned int8", pruned_int8, threads, kernel),
        "pytorch eager": eager,
    }
    return runners, str(checkpoint), "kernel" if kernel else "function"


def bench_data(
    runners: dict[str, Runner],
    shape: EncoderShape,
    rows: Sequence[tuple[list[int], list[int]]],
    pad: Callable[[Sequence[tuple[list[int], list[int]]]], Feeds],
    data_name: str,
    repeats: int = 5,
    batch_size: int = 8,
    progress: bool = True,
    pruned_shape: EncoderShape | None = None,
) -> DataResult:
    """Time every variant on `rows` (token ids) at batch 1 and `batch_size` (see module docstring);
    `pruned_shape`: the pruned graphs' shape where it differs (a CLS-only last layer)."""
    lengths = [len(r[0]) for r in rows]
    singles = [pad([row]) for row in rows]
    base_flops = [shape.flops(n) for n in lengths]
    ort_names = [name for name in runners if name != "pytorch eager"]
    # kept tokens (hence FLOPs and the oracle's length) from one untimed run of each onnxruntime
    # variant; PyTorch eager is the unpruned model
    shapes = {name: pruned_shape or shape if name in ORACLE_OF else shape for name in ort_names}
    flops = {name: [shapes[name].flops(n, kept_counts(runners[name].run(f))) for n, f in zip(lengths, singles)] for name in ort_names}
    flops["pytorch eager"] = base_flops
    jobs = {name: [(runners[name], f) for f in singles] for name in ort_names}
    for name, base in ORACLE_OF.items():
        jobs[f"oracle {name}"] = [(runners[base], oracle_feeds(shape, f, fl)) for f, fl in zip(singles, flops[name])]
    for base in ORACLE_OF.values():
        for fraction in CURVE_FRACTIONS:
            jobs[f"curve {base} {fraction}"] = [(runners[base], oracle_feeds(shape, f, fraction * b)) for f, b in zip(singles, base_flops)]
    batches = [pad(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    short = [cut(f, FIXED_COST_TOKENS) for f in singles if f["input_ids"].shape[1] >= FIXED_COST_TOKENS] or singles
    for name in ort_names:
        jobs[f"batch {name}"] = [(runners[name], b) for b in batches]
        jobs[f"fixed {name}"] = [(runners[name], f) for f in short]
    timed = timed_chunks(jobs, repeats, f"onnxruntime {data_name}".strip(), progress)
    if "pytorch eager" in runners:
        # PyTorch on its own afterwards: its OpenMP workers keep spinning after a call and would
        # slow whichever onnxruntime session ran next.
        eager = runners["pytorch eager"]
        timed.update(timed_chunks(
            {"pytorch eager": [(eager, f) for f in singles], "batch pytorch eager": [(eager, b) for b in batches],
             "fixed pytorch eager": [(eager, f) for f in short]},
            repeats, f"pytorch {data_name}".strip(), progress,
        ))
    ms = {name: [t for t, _ in timed[name]] for name in runners}
    curve = {
        base: [
            (sum(shape.flops(f["input_ids"].shape[1]) for _, f in jobs[f"curve {base} {fraction}"]) / sum(base_flops),
             float(np.mean([t for t, _ in timed[f"curve {base} {fraction}"]])))
            for fraction in CURVE_FRACTIONS
        ]
        for base in ORACLE_OF.values()
    }
    batch_ms = {name: sum(t for t, _ in timed[f"batch {name}"]) for name in runners}
    mean_base = float(np.mean(base_flops))
    total_base = sum(ms["unpruned fp32"])
    results = []
    for name in runners:
        oracle = [t for t, _ in timed.get(f"oracle {name}", [])]
        results.append(
            VariantResult(
                variant=name,
                batch1_median_ms=statistics.median(ms[name]),
                batch1_p90_ms=float(np.percentile(ms[name], 90)),
                speedup=total_base / sum(ms[name]),
                batch8_per_s=len(rows) / (batch_ms[name] / 1e3),
                batch8_speedup=batch_ms["unpruned fp32"] / batch_ms[name],
                flops_reduction=sum(base_flops) / sum(flops[name]),
                fixed_cost_ms=statistics.median([t for t, _ in timed[f"fixed {name}"]]),
                removal_efficiency=sum(oracle) / sum(ms[name]) if oracle else None,
                oracle_median_ms=statistics.median(oracle) if oracle else None,
            )
        )
    points = {name: [(f / mean_base, t) for f, t in zip(flops[name], ms[name])] for name in runners}
    return DataResult(data_name, len(rows), float(np.mean(lengths)), results, curve, points)


def run_bench(
    artifact: str | os.PathLike,
    data: Sequence[tuple[str, Sequence[TextExample] | Sequence[tuple[list[int], list[int]]]]],
    checkpoint: str | os.PathLike | None = None,
    threads: int = 2,
    repeats: int = 5,
    batch_size: int = 8,
    kernel_library: KernelChoice = None,
    progress: bool = True,
) -> BenchReport:
    """Build the variants once, then `bench_data` on each (name, examples or token rows: (input_ids,
    token_type_ids) each, e.g. a QA model's windows)."""
    import torch

    runners, checkpoint, token_prune = build_variants(artifact, checkpoint, threads, kernel_library)
    found = read_artifact(artifact)  # build_variants opened it: only its files are read here
    encoder, shape = TextEncoder.from_dir(artifact), EncoderShape.from_hf(found.hf_config)
    pruned_shape = EncoderShape.from_hf(found.hf_config, found.manifest.export.cls_only_last)
    results = [
        bench_data(runners, shape, _rows(encoder, examples), encoder.pad, name, repeats, batch_size, progress=progress, pruned_shape=pruned_shape)
        for name, examples in data
    ]
    return BenchReport(
        artifact=str(artifact), checkpoint=checkpoint, threads=threads, repeats=repeats, cpu=cpu_model(),
        isa=isa_flags(), onnxruntime=ort.__version__, torch=torch.__version__, token_prune=token_prune, results=results,
        pruned_graph=found.manifest.export.describe(),
    )


def _rows(encoder: TextEncoder, examples) -> list[tuple[list[int], list[int]]]:
    if all(isinstance(e, TextExample) for e in examples):
        return encoder.token_ids(examples)
    return [(list(ids), list(types)) for ids, types in examples]


def environment_line(report: BenchReport) -> str:
    isa = ", ".join(report.isa) or "none of " + "/".join(ISA_FLAGS)
    return (
        f"CPU: {report.cpu} ({platform.machine()}; ISA: {isa}); {report.threads} threads; onnxruntime {report.onnxruntime}, "
        f"torch {report.torch}; TokenPrune: {report.token_prune}; medians of {report.repeats} runs per input."
        + (f" Pruned graph: {report.pruned_graph}." if report.pruned_graph else "")
    )


def markdown(report: BenchReport) -> str:
    """The table `tokprune-bench` prints and writes (bench.md)."""
    head = (
        "| data | variant | batch 1 median ms | batch 1 p90 ms | speedup (batch 1) | batch 8 sent/s | speedup (batch 8) "
        f"| FLOPs reduction | speedup ÷ FLOPs reduction | removal efficiency | {FIXED_COST_TOKENS}-token ms |"
    )
    lines = [head, "|" + "---|" * 11]
    for result in report.results:
        for v in result.variants:
            eff = f"{v.removal_efficiency:.2f}" if v.removal_efficiency is not None else ""
            lines.append(
                f"| {result.data} ({result.sentences} sent., {result.mean_tokens:.1f} tok.) | {v.variant} | {v.batch1_median_ms:.2f} | "
                f"{v.batch1_p90_ms:.2f} | {v.speedup:.2f}× | {v.batch8_per_s:.1f} | {v.batch8_speedup:.2f}× | "
                f"{v.flops_reduction:.2f}× | {v.speedup / v.flops_reduction:.2f} | {eff} | {v.fixed_cost_ms:.2f} |"
            )
    lines.append("")
    lines.append(environment_line(report))
    if report.command:
        lines.append(f"\nCommand: `{report.command}`")
    return "\n".join(lines)


def plot(report: BenchReport, path: str | os.PathLike) -> None:
    """Latency vs relative FLOPs per data file, the unpruned latency-vs-length curves as reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report.results), figsize=(6 * len(report.results), 4.5), squeeze=False)
    colors = {"unpruned fp32": "tab:blue", "unpruned int8": "tab:cyan", "pruned fp32": "tab:red", "pruned int8": "tab:orange", "pytorch eager": "tab:gray"}
    for ax, result in zip(axes[0], report.results):
        for base, points in result.curve.items():
            x, y = zip(*points)
            ax.plot(x, y, "-", color=colors[base], label=f"{base}, sentences cut to fewer FLOPs")
        for v in result.variants:
            pts = result.points.get(v.variant, [])
            x = sum(p[0] for p in pts) / len(pts)
            y = sum(p[1] for p in pts) / len(pts)
            ax.plot([x], [y], "o", color=colors.get(v.variant, "black"), markersize=8, label=f"{v.variant} (mean)")
        ax.set_xlabel("relative FLOPs (1 = unpruned)")
        ax.set_ylabel("batch-1 latency, mean ms")
        ax.set_title(f"{result.data}: {result.sentences} sentences, {result.mean_tokens:.0f} tokens on average")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{Path(report.artifact).name}: {report.cpu}, {report.threads} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def to_json(report: BenchReport) -> dict:
    return asdict(report)


def from_json(data: dict) -> BenchReport:
    """The inverse of `to_json` (bench.json -> BenchReport)."""
    results = [
        DataResult(**{**r, "variants": [VariantResult(**v) for v in r["variants"]]}) for r in data["results"]
    ]
    return BenchReport(**{**data, "results": results})
