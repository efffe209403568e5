"""The accuracy-vs-latency frontier of one task (`tokprune frontier`): token pruning against the cheap
things a user could do instead, every point measured the same way.

A point is one deployable graph (an artifact directory) and the inputs it reads:
- ``fine-tuned``: the baseline checkpoint, unpruned and fused (the reference: latency 1, FLOPs 1);
- ``calibrated`` / ``LTP`` / ``ToP`` (any pruned checkpoint, by its tokprune.json `method`): its fused artifact;
  one pruned from a fewer-layers model stays on its method's curve, its depth recorded and named;
- ``truncation``: the baseline's artifact on inputs cut to k tokens (no training);
- ``truncation (fine-tuned)``: a checkpoint fine-tuned on inputs cut to k, run on inputs cut to k;
- ``fewer layers``: a checkpoint with fewer encoder layers than the baseline (`tokprune-train finetune
  --num-layers m`), unpruned and fused;
and, with `int8`, each of them again as dynamic INT8 (the portable setting: correct on any x86-64 CPU).

Metric: onnxruntime on the whole evaluation split (evaluate.evaluate_artifact). Relative FLOPs: the point's
analytic FLOPs over the baseline's on the whole inputs. Latency: batch 1 on the first `samples` inputs,
the point's graph against the baseline's fused fp32 graph side by side in one process
(bench.timing.timed_chunks); latency ratio = its total / the baseline's total (< 1 is faster).

Incremental: each point is written to <output>/points/<name>.json with what produced it (the
checkpoint's weights' size and mtime, the data, the settings) and reused while those match; the
artifacts stay under <output>/artifacts. frontier.json, frontier.md and frontier.png are rewritten
from every point of the run.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnx_tokprune.errors import CheckpointError

METHOD_LABELS = {"calibrated": "calibrated", "ltp": "LTP", "top": "ToP"}
"""tokprune.json `method` -> the curve a pruned checkpoint belongs to (other methods keep their name)."""
PROTECTED_SUFFIX = ", 2nd text kept"
"""Appended to the curve of a checkpoint whose tokprune.json protects the second text (its own curve)."""
BASELINE, TRUNCATION, FEWER_LAYERS = "fine-tuned", "truncation", "fewer layers"
TRUNCATION_TRAINED = "truncation (fine-tuned)"
UNPRUNED_METHODS = (BASELINE, TRUNCATION, TRUNCATION_TRAINED, FEWER_LAYERS)
"""Curves whose points remove no tokens inside the model."""
LATENCY_AXIS = "batch-1 latency relative to the fused unpruned fp32 model"
FLOPS_AXIS = "relative FLOPs (1 = unpruned)"
LOSS_BUDGET = 1.0
"""Metric points a 'good' point may lose (the papers' claim: at most 1 point)."""
MARKER = "frontier.json"


@dataclass(frozen=True)
class PointSpec:
    """What to measure: a checkpoint (None: the baseline) as an artifact, on inputs cut to `max_tokens`."""

    name: str
    method: str
    checkpoint: str
    max_tokens: int | None = None
    int8: bool = False
    pruned: bool = False


@dataclass
class Point:
    name: str
    method: str
    precision: str
    metric_name: str
    metric: float
    """The task's main metric, in percent."""
    relative_flops: float
    latency_ratio: float
    """Σ batch-1 ms of this point / Σ of the baseline's fused fp32 graph, timed side by side."""
    median_ms: float
    baseline_median_ms: float
    checkpoint: str
    max_tokens: int | None = None
    layers: int | None = None
    """Encoder layers of a fewer-layers point, and of a pruned point whose model has fewer layers than the baseline's."""
    kept_tokens: dict[str, float] = field(default_factory=dict)
    produced_by: dict = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        return 1.0 / self.latency_ratio


@dataclass
class Frontier:
    task: str
    metric_name: str
    baseline: str
    points: list[Point]
    environment: dict
    axes: list[dict[str, str]] = field(default_factory=lambda: [{"x": LATENCY_AXIS}, {"x": FLOPS_AXIS}])
    command: str = ""
    floors: dict[str, float] = field(default_factory=dict)
    """first pruning layer -> the least relative FLOPs pruning from it can reach on these inputs (flops.pruning_floor)."""

    def reference(self) -> Point:
        return next(p for p in self.points if p.method == BASELINE and p.precision == "fp32")

    def best(self, budget: float = LOSS_BUDGET) -> list[Point]:
        """Per (method, precision), the fastest point within `budget` metric points of the fine-tuned fp32
        model (the reference itself left out; the unpruned INT8 model counts)."""
        ref = self.reference()
        floor = ref.metric - budget
        best: dict[tuple[str, str], Point] = {}
        for p in self.points:
            key = (p.method, p.precision)
            if p is not ref and p.metric >= floor and (key not in best or p.latency_ratio < best[key].latency_ratio):
                best[key] = p
        return list(best.values())

    def to_json(self) -> dict:
        data = asdict(self)
        data["best_within_1_point"] = [p.name + (" (int8)" if p.precision == "int8" else "") for p in self.best()]
        return data

    @classmethod
    def from_json(cls, data: dict) -> Frontier:
        fields = {k: v for k, v in data.items() if k != "best_within_1_point"}
        return cls(**{**fields, "points": [Point(**p) for p in data["points"]]})


def read(output: str | os.PathLike) -> Frontier:
    """The frontier a `tokprune frontier --output` directory holds (its frontier.json)."""
    path = Path(output) / MARKER
    try:
        return Frontier.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist: run tokprune frontier (or tools/frontier.sh) for it first") from None
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path} is not a frontier.json written by tokprune frontier ({e})") from None


RESULT_METHODS = ("LTP", "ToP", "calibrated", BASELINE, TRUNCATION, TRUNCATION_TRAINED, FEWER_LAYERS)
"""Row order of results_markdown: the pruning methods first, then what a user could do instead (the
unpruned model as INT8, truncation, fewer layers)."""


def results_markdown(frontiers: Sequence[Frontier], budget: float = LOSS_BUDGET) -> str:
    """Across tasks: per task and method, the fastest point within `budget` of the fine-tuned fp32 model,
    fp32 and INT8 side by side (speedup = 1 / latency ratio against the fused unpruned fp32 model; the
    fine-tuned row's fp32 cell is that reference); "none" where the method has points but none within the budget."""
    lines = [
        "| task | method | fp32: point | Δ | rel. FLOPs | speedup | INT8: point | Δ | rel. FLOPs | speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for frontier in frontiers:
        ref = frontier.reference()
        best = {(p.method, p.precision): p for p in frontier.best(budget)}
        present = {p.method for p in frontier.points}
        for method in (*RESULT_METHODS, *sorted(present - set(RESULT_METHODS))):
            if method not in present:
                continue
            cells = []
            for precision in ("fp32", "int8"):
                p = ref if (method, precision) == (BASELINE, "fp32") else best.get((method, precision))
                cells.append(f"{_detail(p)} | {p.metric - ref.metric:+.2f} | {p.relative_flops:.3f} | {p.speedup:.2f}×" if p else "none | | |")
            lines.append(f"| {frontier.task} ({frontier.metric_name} {ref.metric:.2f}) | {method} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def classify_checkpoint(path: str | os.PathLike, baseline_layers: int) -> tuple[str, bool]:
    """(the curve a checkpoint belongs to, whether it prunes): its tokprune.json method, else "fewer
    layers" when it has fewer layers than the baseline; CheckpointError for anything else."""
    from onnx_tokprune.architectures import num_layers
    from onnx_tokprune.config import CONFIG_NAME, PruneConfig
    from onnx_tokprune.modeling import check_checkpoint

    hf = check_checkpoint(path, "trained")
    if (Path(path) / CONFIG_NAME).is_file():
        config = PruneConfig.load(path)
        return METHOD_LABELS.get(config.method, config.method) + (PROTECTED_SUFFIX if config.protect else ""), True
    layers = num_layers(hf, str(path))
    if layers < baseline_layers:
        return FEWER_LAYERS, False
    raise CheckpointError(
        f"{path} neither prunes (no tokprune.json) nor has fewer layers than the baseline ({layers} vs {baseline_layers}): "
        "pass pruned checkpoints or ones fine-tuned with --num-layers"
    )


def truncation_for_flops(lengths: Sequence[int], shape, targets: Sequence[float], minimum: int = 4) -> list[int]:
    """Per relative-FLOPs target, the token count k whose truncation (every input cut to min(n, k)) costs
    the FLOPs closest to it on inputs of these `lengths`; distinct, ascending."""
    total = sum(shape.flops(n) for n in lengths)
    longest = max(lengths)
    costs = {k: sum(shape.flops(min(n, k)) for n in lengths) / total for k in range(minimum, longest + 1)}
    return sorted({min(costs, key=lambda k: abs(costs[k] - t)) for t in targets})


def _fingerprint(checkpoint: str) -> dict:
    from onnx_tokprune.modeling import WEIGHTS_FILES

    found = {}
    for name in (*WEIGHTS_FILES, "config.json", "tokprune.json"):
        path = Path(checkpoint) / name
        if path.is_file():
            stat = path.stat()
            found[name] = [stat.st_size, int(stat.st_mtime)]
    return found


class FrontierRun:
    """Measures the points of one task into `output` (module docstring)."""

    def __init__(
        self, output: str | os.PathLike, baseline: str, split, samples: int = 200, repeats: int = 5, threads: int = 2,
        kernel_library=None, force: bool = False, progress: bool = True, data_key: str = "", metric: str | None = None,
    ) -> None:
        from onnx_tokprune.io import check_output_dir

        self.output = Path(output)
        if self.output.exists() and any(self.output.iterdir()) and not (self.output / MARKER).is_file() and not (self.output / "points").is_dir():
            check_output_dir(self.output, False)  # an unrelated directory: refused in one line
        (self.output / "points").mkdir(parents=True, exist_ok=True)
        (self.output / "artifacts").mkdir(exist_ok=True)
        self.baseline, self.split, self.samples, self.repeats, self.threads = str(baseline), split, samples, repeats, threads
        self.kernel_library, self.force, self.progress, self.data_key = kernel_library, force, progress, data_key
        self.metric = metric
        self.metric_name = metric or ""
        """The main metric's name, known once a point is measured."""
        self._reference = None
        self._lengths: list[int] | None = None

    def settings(self, spec: PointSpec) -> dict:
        return {
            "spec": asdict(spec), "data": self.data_key, "metric": self.metric, "examples": len(self.split.examples), "samples": self.samples,
            "repeats": self.repeats, "threads": self.threads, "baseline": self.baseline, "baseline_files": _fingerprint(self.baseline),
            "checkpoint_files": _fingerprint(spec.checkpoint),
        }

    def artifact(self, checkpoint: str, pruned: bool, int8: bool) -> Path:
        """The fused (and INT8) artifact of `checkpoint` under <output>/artifacts, exported once."""
        from onnx_tokprune.export.exporter import export_artifact
        from onnx_tokprune.io import write_json_atomic
        from onnx_tokprune.modeling import load_pruned, wrap

        import hashlib

        resolved = Path(checkpoint).resolve()
        tag = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]  # two checkpoints may share a directory name
        path = self.output / "artifacts" / f"{resolved.name}-{tag}{'-int8' if int8 else ''}-onnx"
        record = path / "frontier-source.json"
        source = {"checkpoint": str(Path(checkpoint).resolve()), "files": _fingerprint(checkpoint), "int8": int8}
        if path.is_dir() and record.is_file() and json.loads(record.read_text()) == source:
            return path
        encoder = load_pruned(checkpoint, "drop", require_config=pruned)
        if not pruned:
            encoder = wrap(encoder.model, None, "drop")
        export_artifact(encoder, checkpoint, path, force=True, int8=int8, optimize=True, int8_setting="portable")
        write_json_atomic(record, source)
        return path

    def measure(self, spec: PointSpec) -> Point:
        """The point of `spec`, from its cached JSON while what produced it is unchanged."""
        from onnx_tokprune.io import write_json_atomic

        cache = self.output / "points" / f"{spec.name}{'-int8' if spec.int8 else ''}.json"
        settings = self.settings(spec)
        if cache.is_file() and not self.force:
            data = json.loads(cache.read_text())
            if data.get("produced_by") == settings:
                self.metric_name = data["metric_name"]
                return Point(**data)
        point = self._measure(spec)
        point.produced_by = settings
        write_json_atomic(cache, asdict(point))
        return point

    def _measure(self, spec: PointSpec) -> Point:
        from onnx_tokprune.architectures import num_layers
        from onnx_tokprune.evaluate import evaluate_artifact
        from onnx_tokprune.runtime.session import PrunedSession

        artifact = self.artifact(spec.checkpoint, spec.pruned, spec.int8)
        session = PrunedSession(artifact, self.threads, self.kernel_library, spinning=False)
        result = evaluate_artifact(session, self.split, self.metric, progress=self.progress, max_tokens=spec.max_tokens)
        self.metric_name = result.main_metric
        reference_gflops = self.reference_gflops()
        ms, base_ms, ratio = self.latency(session, spec.max_tokens, spec.name)
        if spec.method == BASELINE and not spec.int8:  # the reference itself: 1 by definition, not a noisy self-comparison
            ms, ratio = base_ms, 1.0
        depth = num_layers(session.artifact.hf_config)
        shallower = spec.method == FEWER_LAYERS or (spec.pruned and depth < num_layers(self.reference_session().artifact.hf_config))
        layers = depth if shallower else None
        return Point(
            name=spec.name, method=spec.method, precision="int8" if spec.int8 else "fp32", metric_name=result.main_metric,
            metric=100 * result.metrics[result.main_metric], relative_flops=result.analytic_gflops / reference_gflops,
            latency_ratio=ratio, median_ms=ms, baseline_median_ms=base_ms, checkpoint=spec.checkpoint,
            max_tokens=spec.max_tokens, layers=layers, kept_tokens=result.kept_tokens,
        )

    def reference_session(self):
        from onnx_tokprune.runtime.session import PrunedSession

        if self._reference is None:
            self._reference = PrunedSession(self.artifact(self.baseline, False, False), self.threads, self.kernel_library, spinning=False)
        return self._reference

    def reference_gflops(self) -> float:
        """Mean analytic GFLOPs of the baseline on the whole evaluation inputs."""
        from onnx_tokprune.flops import EncoderShape

        shape = EncoderShape.from_hf(self.reference_session().artifact.hf_config)
        lengths = self.lengths()
        return sum(shape.flops(n) for n in lengths) / len(lengths) / 1e9

    def pruning_floors(self, first_layers: Sequence[int] = (0, 1, 2)) -> dict[str, float]:
        """flops.pruning_floor of the baseline on the whole evaluation inputs, per first pruning layer."""
        from onnx_tokprune.flops import EncoderShape, pruning_floor

        shape = EncoderShape.from_hf(self.reference_session().artifact.hf_config)
        return {str(first): pruning_floor(shape, self.lengths(), first) for first in first_layers if first < shape.layers}

    def lengths(self) -> list[int]:
        """The whole evaluation inputs' token counts (tokenized once)."""
        if self._lengths is None:
            self._lengths = [len(r[0]) for r in self.reference_session().text_encoder.token_ids(self.split.examples)]
        return self._lengths

    def latency(self, session, max_tokens: int | None, name: str) -> tuple[float, float, float]:
        """(median ms of `session` on its inputs, median ms of the baseline on the whole inputs, Σ ratio), batch 1."""
        import statistics

        from onnx_tokprune.bench.timing import Runner, timed_chunks

        reference = self.reference_session()
        examples = self.split.examples[: self.samples]
        full = [reference.text_encoder.pad([r]) for r in reference.text_encoder.token_ids(examples)]
        mine = [session.text_encoder.pad([r]) for r in session.text_encoder.token_ids(examples, max_tokens)]
        jobs = {
            "baseline": [(Runner("baseline", reference.run), f) for f in full],
            name: [(Runner(name, session.run), f) for f in mine],
        }
        timed = timed_chunks(jobs, self.repeats, f"latency {name}", self.progress)
        ms = [t for t, _ in timed[name]]
        base = [t for t, _ in timed["baseline"]]
        return statistics.median(ms), statistics.median(base), sum(ms) / sum(base)


def environment(threads: int, token_prune: str) -> dict:
    import onnxruntime as ort

    from onnx_tokprune.bench.timing import cpu_model, isa_flags

    return {"cpu": cpu_model(), "machine": platform.machine(), "isa": isa_flags(), "threads": threads,
            "onnxruntime": ort.__version__, "token_prune": token_prune}


def markdown(frontier: Frontier) -> str:
    """The frontier as a table (every point) and the best point per method within LOSS_BUDGET."""
    ref = frontier.reference()
    lines = [
        f"| method | point | precision | {frontier.metric_name} | Δ vs fine-tuned | relative FLOPs | latency (rel.) | speedup |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate((BASELINE, "calibrated", "LTP", "ToP", TRUNCATION, TRUNCATION_TRAINED, FEWER_LAYERS))}
    for p in sorted(frontier.points, key=lambda p: (order.get(p.method, 99), p.precision, -p.latency_ratio)):
        lines.append(
            f"| {p.method} | {_detail(p)} | {p.precision} | {p.metric:.2f} | {p.metric - ref.metric:+.2f} | "
            f"{p.relative_flops:.3f} | {p.latency_ratio:.3f} | {p.speedup:.2f}× |"
        )
    best = frontier.best()
    lines += ["", f"Fastest point per method within {LOSS_BUDGET:g} point of the fine-tuned fp32 model ({ref.metric:.2f}):", ""]
    if best:
        lines += ["| method | precision | point | Δ | relative FLOPs | speedup |", "|---|---|---|---|---|---|"]
        for p in sorted(best, key=lambda p: p.latency_ratio):
            lines.append(f"| {p.method} | {p.precision} | {_detail(p)} | {p.metric - ref.metric:+.2f} | {p.relative_flops:.3f} | {p.speedup:.2f}× |")
    else:
        lines.append("none")
    fits = latency_fit_lines(frontier)
    if fits:
        lines += ["", *fits]
    noise = evaluation_noise(frontier)
    if noise:
        lines += ["", noise]
    env = frontier.environment
    lines += ["", f"CPU: {env['cpu']} ({env['machine']}; ISA: {', '.join(env['isa']) or 'baseline x86-64'}); {env['threads']} threads; "
              f"onnxruntime {env['onnxruntime']}; TokenPrune: {env['token_prune']}; batch-1 latency on the first inputs of the data, "
              "each point timed side by side with the fused unpruned fp32 model."]
    if frontier.command:
        lines.append(f"\nCommand: `{frontier.command}`")
    return "\n".join(lines)


@dataclass(frozen=True)
class LatencyFit:
    """Latency ratio ≈ intercept + slope × relative FLOPs, least squares over the pruned points of one
    precision on the baseline's depth. The intercept is what removing tokens cannot remove (the first
    layers before pruning starts scale with FLOPs; embeddings, the head, per-node overhead and, for INT8,
    the quantized baseline's own gain do not), so 1 / intercept bounds the speedup of pruning alone."""

    precision: str
    intercept: float
    slope: float
    r2: float
    points: int
    flops_range: tuple[float, float]

    def flops_for(self, speedup: float) -> float:
        """The relative FLOPs at which the fit reaches `speedup` (≤ 0: out of pruning's reach)."""
        return (1 / speedup - self.intercept) / self.slope

    @property
    def ceiling(self) -> float:
        return 1 / self.intercept if self.intercept > 0 else float("inf")

    def speedup_at(self, flops: float) -> float:
        """The speedup the fit gives at `flops` relative FLOPs."""
        return 1 / (self.intercept + self.slope * flops)


def latency_fit(frontier: Frontier, precision: str = "fp32", min_points: int = 3, min_spread: float = 0.1) -> LatencyFit | None:
    """The LatencyFit of the frontier's pruned points of `precision` (points pruned from a fewer-layers
    model are left out: their layers are cheaper); None with fewer than `min_points` points, or FLOPs
    spanning less than `min_spread`, or latency not rising with FLOPs."""
    import statistics

    pts = [p for p in frontier.points if p.method not in UNPRUNED_METHODS and p.precision == precision and p.layers is None]
    x, y = [p.relative_flops for p in pts], [p.latency_ratio for p in pts]
    if len(pts) < min_points or max(x) - min(x) < min_spread:
        return None
    slope, intercept = statistics.linear_regression(x, y)
    if slope <= 0:
        return None
    return LatencyFit(precision, intercept, slope, statistics.correlation(x, y) ** 2, len(pts), (min(x), max(x)))


def latency_fit_lines(frontier: Frontier, speedups: Sequence[float] = (1.5, 2.0, 2.5, 3.0, 4.0)) -> list[str]:
    """One sentence per precision: the fit, its ceiling, and the relative FLOPs each speedup would need."""
    lines = []
    for precision in ("fp32", "int8"):
        fit = latency_fit(frontier, precision)
        if fit is None:
            continue
        needs = ", ".join(f"{s:g}× ≈ {fit.flops_for(s):.2f}" for s in speedups if 0 < fit.flops_for(s) < 1)
        lines.append(
            f"Pruned points' latency ({precision}, {fit.points} points at {fit.flops_range[0]:.2f}–{fit.flops_range[1]:.2f} relative FLOPs) "
            f"≈ {fit.intercept:.3f} + {fit.slope:.3f} × relative FLOPs (r² {fit.r2:.2f}): pruning alone cannot pass "
            f"{fit.ceiling:.1f}× (zero FLOPs, extrapolated)" + (f"; relative FLOPs needed for {needs}" if needs else "")
            + "".join(f"; pruning from layer {first} cannot go below {floor:.3f} (only [CLS] after its attention): "
                      f"{fit.speedup_at(floor):.2f}× at most" for first, floor in sorted(frontier.floors.items()))
            + "."
        )
    return lines


def evaluation_noise(frontier: Frontier) -> str:
    """How much a point of the metric is on this evaluation set: its size, and for accuracy the
    baseline's binomial standard error, so "within 1 point" is read against the set's own noise."""
    ref = frontier.reference()
    n = ref.produced_by.get("examples")
    if not n:
        return ""
    line = f"Evaluation set: {n} examples (1 point ≈ {n / 100:.1f} examples)"
    if ref.metric_name == "accuracy":
        p = ref.metric / 100
        se = 100 * (p * (1 - p) / n) ** 0.5
        line += f"; the baseline's accuracy has a binomial standard error of ±{se:.1f} points"
        if se > LOSS_BUDGET:
            line += f": differences within {LOSS_BUDGET:g} point are within this set's noise"
    return line + "."


def _detail(p: Point) -> str:
    if p.method == BASELINE:
        return f"unpruned ({Path(p.checkpoint).name})"
    if p.method == TRUNCATION:
        return f"first {p.max_tokens} tokens"
    if p.method == TRUNCATION_TRAINED:
        return f"first {p.max_tokens} tokens ({Path(p.checkpoint).name})"
    if p.method == FEWER_LAYERS:
        return f"{p.layers} layers ({Path(p.checkpoint).name})"
    return Path(p.checkpoint).name + (f" (on {p.layers} layers)" if p.layers else "")


def plot(frontier: Frontier, path: str | os.PathLike) -> None:
    """Two panels, metric against latency ratio and against relative FLOPs; one curve per method and
    precision (INT8 dashed); the fine-tuned model as a star; the LOSS_BUDGET line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = frontier.reference()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colors = {"calibrated": "tab:green", "LTP": "tab:red", "ToP": "tab:purple", TRUNCATION: "tab:gray",
              TRUNCATION_TRAINED: "tab:olive", FEWER_LAYERS: "tab:brown", BASELINE: "tab:blue",
              "calibrated" + PROTECTED_SUFFIX: "tab:cyan", "LTP" + PROTECTED_SUFFIX: "tab:orange", "ToP" + PROTECTED_SUFFIX: "tab:pink"}
    for ax, (key, label) in zip(axes, (("latency_ratio", LATENCY_AXIS), ("relative_flops", FLOPS_AXIS))):
        groups: dict[tuple[str, str], list[Point]] = {}
        for p in frontier.points:
            groups.setdefault((p.method, p.precision), []).append(p)
        for (method, precision), pts in sorted(groups.items()):
            pts = sorted(pts, key=lambda p: getattr(p, key))
            style = "--" if precision == "int8" else "-"
            marker = "*" if method == BASELINE else ("s" if precision == "int8" else "o")
            ax.plot([getattr(p, key) for p in pts], [p.metric for p in pts], style, marker=marker, color=colors.get(method, "black"),
                    markersize=11 if method == BASELINE else 6, label=f"{method} ({precision})")
        ax.axhline(ref.metric - LOSS_BUDGET, color="black", linewidth=0.8, linestyle=":", label=f"fine-tuned − {LOSS_BUDGET:g} point")
        ax.set_xlabel(label)
        ax.set_xlim(0, max(1.05, 1.05 * max(getattr(p, key) for p in frontier.points)))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{frontier.metric_name} (%)")
    axes[0].legend(fontsize=7, loc="lower right")
    env = frontier.environment
    fig.suptitle(f"{frontier.task}: {env['cpu']}, {env['threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(frontier: Frontier, output: str | os.PathLike) -> list[Path]:
    """frontier.json, frontier.md and frontier.png in `output`, each written whole (atomically)."""
    import tempfile

    from onnx_tokprune.io import chmod_default, write_json_atomic, write_text_atomic

    output = Path(output)
    write_json_atomic(output / MARKER, frontier.to_json())
    write_text_atomic(output / "frontier.md", markdown(frontier) + "\n")
    with tempfile.NamedTemporaryFile(dir=output, suffix=".png", delete=False) as tmp:
        pass
    try:
        plot(frontier, tmp.name)
        os.replace(tmp.name, output / "frontier.png")
        chmod_default(output / "frontier.png")
    finally:
        if os.path.exists(tmp.name):
            os.unlink(tmp.name)
    return [output / MARKER, output / "frontier.md", output / "frontier.png"]
