"""Which tokens of one sentence survive each pruning layer of an artifact, as data and as a PNG; over a
whole dataset, which share of each text (of a pair) survives.

```python
from onnx_tokprune.runtime import open_artifact
from onnx_tokprune.runtime.survival import plot_survival, segment_survival, token_survival
session = open_artifact("out/top/sst2_top-onnx")
survival = token_survival(session, "a gorgeous , witty , seductive movie .")
print(survival.lines())                     # ['input (10/10): [CLS] a gorgeous ...', 'L1 (8/10): ...', ...]
plot_survival(survival, "survival.png")     # needs matplotlib (the package's [tools] extra)
summary = segment_survival(session, examples)   # over many inputs: the share of each text's tokens kept
print(summary.lines())                      # ['L1: first text 61.0% ..., second text 83.2% ...', ...]
```

The positions come from the graph's own `kept_index_<l>` outputs (composed by `original_positions`),
so the picture shows what onnxruntime removed, not what a PyTorch model would. No torch needed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnx_tokprune.artifact import LOGITS_OUTPUT, kept_outputs, original_positions
from onnx_tokprune.data.text import TextExample
from onnx_tokprune.errors import ArtifactError
from onnx_tokprune.io import chmod_default
from onnx_tokprune.runtime.session import PrunedSession

KEPT_COLOR = "#3b75af"
DROPPED_HERE_COLOR = "#f4b9b2"  # removed by this layer
GONE_COLOR = "#f2f2f2"  # removed by an earlier layer
MAX_WIDTH_IN = 24.0  # cap on the figure width; long sentences get smaller (and, past that, thinned) labels
CELL_IN = 0.3  # preferred width of one token column
DPI = 110


@dataclass
class Survival:
    """One input's token survival: `kept[r, t]` is True when input token t is still present after
    pruning layer `layers[r]`."""

    tokens: list[str]
    layers: list[int]
    kept: np.ndarray  # bool [len(layers), len(tokens)]
    text: str = ""
    text_pair: str | None = None
    label: str | None = None
    score: float | None = None
    segments: list[int] = field(default_factory=list)  # token_type_ids, one per token

    def kept_positions(self, row: int) -> list[int]:
        """Input positions kept after pruning layer `layers[row]`, ascending."""
        return [int(i) for i in np.flatnonzero(self.kept[row])]

    def counts(self) -> list[int]:
        """Tokens kept after each pruning layer."""
        return [int(c) for c in self.kept.sum(axis=1)]

    def lines(self) -> list[str]:
        """'input (n/n): tokens...' then 'L<l> (k/n): kept tokens...' per pruning layer."""
        n = len(self.tokens)
        out = [f"input ({n}/{n}): " + " ".join(self.tokens)]
        for row, layer in enumerate(self.layers):
            kept = self.kept_positions(row)
            out.append(f"L{layer} ({len(kept)}/{n}): " + " ".join(self.tokens[i] for i in kept))
        return out


def token_survival(session: PrunedSession, text: str, text_pair: str | None = None) -> Survival:
    """Run one text (or text pair) through the artifact and record which tokens each pruning layer keeps.

    Raises ArtifactError for an artifact without `kept_index_<l>` outputs (an unpruned export) and
    TextTooLongError for a text longer than the model allows.
    """
    ((ids, types),) = session.text_encoder.token_ids([TextExample(text, text_pair)])
    kept_names = kept_outputs(session.output_names)
    if not kept_names:
        raise ArtifactError(f"{session.path} has no kept_index_<layer> outputs: it was exported without pruning (--unpruned)")
    wanted = [name for _, name in kept_names] + ([LOGITS_OUTPUT] if LOGITS_OUTPUT in session.output_names else [])
    outputs = session.run(session.text_encoder.pad([(ids, types)]), wanted)
    positions = original_positions(outputs)
    layers = [layer for layer, _ in kept_names]
    kept = np.zeros((len(layers), len(ids)), dtype=bool)
    for row, (_, name) in enumerate(kept_names):
        pos = positions[name][0]
        kept[row, pos[pos >= 0]] = True
    label = score = None
    if LOGITS_OUTPUT in outputs:
        logits = outputs[LOGITS_OUTPUT][0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = int(probs.argmax())
        label, score = session.id2label.get(best, str(best)), float(probs[best])
    tokenizer = session.text_encoder.tokenizer
    tokens = [tokenizer.id_to_token(i) or f"<{i}>" for i in ids]
    return Survival(tokens, layers, kept, text, text_pair, label, score, list(types))


SEGMENT_NAMES = ("first text", "second text")


@dataclass
class SegmentSurvival:
    """Over many inputs: how many tokens of each text (0: the first, 1: the second of a pair; the
    tokens the tokenizer adds left out) are still present after each pruning layer."""

    layers: list[int]
    tokens: list[int]  # per text: its tokens over all inputs
    kept: list[list[int]]  # kept[r][s]: text s's tokens present after pruning layer layers[r]
    inputs: int

    def share(self, row: int, segment: int) -> float:
        """The fraction of text `segment`'s tokens kept after pruning layer `layers[row]` (nan without tokens)."""
        return self.kept[row][segment] / self.tokens[segment] if self.tokens[segment] else float("nan")

    def lines(self) -> list[str]:
        """'input: first text N tokens, ...' then 'L<l>: first text P% (k/N), ...' per pruning layer."""
        texts = [s for s in range(len(self.tokens)) if self.tokens[s]]
        out = [f"input ({self.inputs} inputs): " + ", ".join(f"{SEGMENT_NAMES[s]} {self.tokens[s]} tokens" for s in texts)]
        for row, layer in enumerate(self.layers):
            out.append(f"L{layer}: " + ", ".join(
                f"{SEGMENT_NAMES[s]} {100 * self.share(row, s):.1f}% ({self.kept[row][s]}/{self.tokens[s]})" for s in texts))
        return out


def segment_survival(session: PrunedSession, examples: Sequence[TextExample], progress: bool = True) -> SegmentSurvival:
    """Run every example (batch 1) and count, per pruning layer, the kept tokens of each text: on pair
    tasks, whether pruning removes the second text (an NLI hypothesis, a question) sooner than the first."""
    rows: Sequence[TextExample] = examples
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(examples, desc="token survival", unit="input")
    tokens = np.zeros(2, dtype=np.int64)
    kept: np.ndarray | None = None  # [layer row, text]
    layers: list[int] = []
    for example in rows:
        survival = token_survival(session, example.text, example.text_pair)
        text_of = np.array([-1 if s is None else s for s in session.text_encoder.sequence_ids(example)])
        if kept is None:
            layers, kept = survival.layers, np.zeros((len(survival.layers), 2), dtype=np.int64)
        for s in (0, 1):
            tokens[s] += int((text_of == s).sum())
            kept[:, s] += survival.kept[:, text_of == s].sum(axis=1)
    if kept is None:
        raise ValueError("no examples to summarise")
    return SegmentSurvival(layers, tokens.tolist(), kept.tolist(), len(examples))


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("the survival picture needs matplotlib: pip install 'matplotlib>=3.7' (the package's [tools] extra)") from e
    return Figure


def check_plotting() -> None:
    """ImportError, whose message says how to install it, when matplotlib is missing."""
    _figure_class()


def plot_survival(survival: Survival, path: str | os.PathLike, title: str | None = None) -> Path:
    """Write a PNG grid: a row 'input' with every token, then one row per pruning layer; one column
    per token. Kept cells are coloured, removed ones light (pale red in the layer that removed them).
    Written to a temp file beside `path`, then renamed into place. Returns the path."""
    Figure = _figure_class()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    path = Path(path)
    n, rows = len(survival.tokens), len(survival.layers) + 1
    grid = np.full((rows, n), 2, dtype=np.int8)  # 0 gone earlier, 1 removed by this layer, 2 kept
    previous = np.ones(n, dtype=bool)
    for r in range(len(survival.layers)):
        now = np.asarray(survival.kept[r], dtype=bool)
        grid[r + 1] = np.where(now, 2, np.where(previous, 1, 0))
        previous = now

    width = min(MAX_WIDTH_IN, max(6.0, 2.2 + CELL_IN * n))
    cell_pt = (width - 2.2) * 72 / max(n, 1)
    fontsize = min(9.0, max(4.0, 0.8 * cell_pt))
    step = max(1, int(np.ceil(fontsize * 1.15 / max(cell_pt, 1e-6))))  # label every step-th token when they cannot fit
    longest = max((len(t) for t in survival.tokens[::step]), default=1)
    label_in = min(2.0, 0.25 + 0.55 * fontsize / 72 * min(longest, 16))
    height = 1.1 + 0.32 * rows + label_in

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.pcolormesh(
        grid, cmap=ListedColormap([GONE_COLOR, DROPPED_HERE_COLOR, KEPT_COLOR]), vmin=-0.5, vmax=2.5,
        edgecolors="white", linewidth=0.6 if cell_pt > 3 else 0.0,
    )
    ax.set_xlim(0, n)
    ax.set_ylim(rows, 0)
    ax.set_yticks(np.arange(rows) + 0.5)
    ax.set_yticklabels([f"input ({n})"] + [f"L{layer} ({c}/{n})" for layer, c in zip(survival.layers, survival.counts())], fontsize=9)
    shown = np.arange(0, n, step)
    ax.set_xticks(shown + 0.5)
    ax.set_xticklabels([_short(survival.tokens[i]) for i in shown], rotation=90, fontsize=fontsize)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    segments = survival.segments or [0] * n
    for t in range(1, min(n, len(segments))):
        if segments[t] != segments[t - 1]:
            ax.axvline(t, color="black", linewidth=1.0)
    ax.set_title(title or "which tokens survive each pruning layer", loc="left", fontsize=10)
    ax.legend(
        handles=[Patch(color=KEPT_COLOR, label="kept"), Patch(color=DROPPED_HERE_COLOR, label="removed here"),
                 Patch(color=GONE_COLOR, label="removed earlier")],
        loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, frameon=False, fontsize=8, handlelength=1.2,
    )

    return _save_png(fig, path)


def plot_segment_survival(summary: SegmentSurvival, path: str | os.PathLike, title: str | None = None) -> Path:
    """Write a PNG: the share of each text's tokens kept after each pruning layer (one line per text).
    Written to a temp file beside `path`, then renamed into place. Returns the path."""
    Figure = _figure_class()
    fig = Figure(figsize=(6.4, 3.8), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(summary.layers) + 1)
    for s, (color, marker) in enumerate(((KEPT_COLOR, "o"), ("#d1603d", "s"))):
        if summary.tokens[s]:
            shares = [100.0] + [100 * summary.share(r, s) for r in range(len(summary.layers))]
            ax.plot(x, shares, color=color, marker=marker, label=f"{SEGMENT_NAMES[s]} ({summary.tokens[s]} tokens)")
    ax.set_xticks(x)
    ax.set_xticklabels(["input"] + [f"after L{layer}" for layer in summary.layers])
    ax.set_ylim(0, 105)
    ax.set_ylabel("tokens kept (%)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(title or f"which share of each text survives ({summary.inputs} inputs)", loc="left", fontsize=10)
    return _save_png(fig, Path(path))


def _save_png(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI)
        chmod_default(tmp)  # mkstemp makes 0600; give the picture the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _short(token: str, limit: int = 16) -> str:
    return token if len(token) <= limit else token[: limit - 1] + "…"
