"""Parity: the PyTorch drop-mode model vs the ONNX artifact in onnxruntime, on real text.

For each batch size, examples are run in file order (batch 1 unpadded; larger batches ragged and
right-padded the same way for both sides) and compared on:
- per pruning layer, the fraction of rows whose kept set (original positions) is identical;
- max |Δlogit| over all rows (a span head: start and end logits at every non-padding position);
- prediction agreement (argmax; a span head: the argmax start and end positions).
The PyTorch drop mode is also compared with the mask mode (the papers' simulation).

A row whose kept sets differ is *float-ambiguous*, not a mismatch, when at its first differing layer
every token decided differently has a score within calibrate.DECISION_RTOL of the decision boundary
(the threshold; for rank rules, a token the reference decided the other way): two correct
implementations summing in different orders may decide such a token either way. Those rows are
counted apart and left out of max |Δlogit|; only real mismatches fail the check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from onnx_tokprune.artifact import HEADS, kept_output_layer, kept_output_name, kept_outputs, original_positions
from onnx_tokprune.calibrate import within_margin
from onnx_tokprune.config import LayerRule
from onnx_tokprune.data.text import TextExample
from onnx_tokprune.errors import AtolError, KeptSetError
from onnx_tokprune.modeling import PrunedEncoder, wrap
from onnx_tokprune.runtime.session import PrunedSession

DEFAULT_ATOL = 1e-4


@dataclass
class Comparison:
    """One side-by-side run: `name` says which two models, `batch_size` how they were batched."""

    name: str
    batch_size: int
    examples: int
    kept_agreement: dict[str, float] = field(default_factory=dict)
    kept_mismatch_rows: dict[str, int] = field(default_factory=dict)
    """Rows whose kept set differs at that layer for a reason other than float ambiguity."""
    kept_ambiguous_rows: dict[str, int] = field(default_factory=dict)
    """Rows whose kept set differs at that layer after a float-ambiguous decision (module docstring)."""
    max_abs_logit_diff: float = 0.0
    """Over every row but the float-ambiguous ones."""
    worst_example: int = -1
    prediction_agreement: float = 1.0
    ambiguous_examples: list[int] = field(default_factory=list)


@dataclass
class ParityReport:
    comparisons: list[Comparison]
    atol: float = DEFAULT_ATOL

    @property
    def artifact_comparisons(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.name == "pytorch-drop vs onnxruntime"]

    def check(self) -> None:
        """Raise KeptSetError / AtolError naming the worst output when the artifact is off."""
        for c in self.artifact_comparisons:
            bad = {k: v for k, v in c.kept_mismatch_rows.items() if v}
            if bad:
                worst = max(bad, key=bad.get)
                raise KeptSetError(
                    f"{worst}: kept set differs on {bad[worst]}/{c.examples} rows at batch {c.batch_size} "
                    f"(all layers: {bad})"
                )
        for c in self.artifact_comparisons:
            if not c.max_abs_logit_diff <= self.atol:
                raise AtolError(
                    f"logits: max |Δ| {c.max_abs_logit_diff:.3g} > atol {self.atol:g} at batch {c.batch_size} "
                    f"(example {c.worst_example})"
                )

    def to_json(self) -> dict:
        return {"atol": self.atol, "comparisons": [asdict(c) for c in self.comparisons]}

    def table(self) -> str:
        """A Markdown table for people."""
        layers = [name for _, name in kept_outputs({k for c in self.comparisons for k in c.kept_agreement})]
        head = ["comparison", "batch", "examples", *[f"kept agree L{kept_output_layer(k)}" for k in layers], "float-ambiguous rows", "max abs Δlogit", "pred agree"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in self.comparisons:
            cells = [c.name, str(c.batch_size), str(c.examples)]
            cells += [f"{100 * c.kept_agreement.get(k, float('nan')):.2f}%" for k in layers]
            cells += [str(len(c.ambiguous_examples)), f"{c.max_abs_logit_diff:.2e}", f"{100 * c.prediction_agreement:.2f}%"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _present(kept: np.ndarray) -> list[np.ndarray]:
    """Per row of a [B,S] keep mask (PrunedOutput.kept, an attention mask), the positions present."""
    return [np.flatnonzero(row > 0) for row in kept]


def _drop_positions(positions: np.ndarray) -> list[np.ndarray]:
    """Per row of [B,K] original positions (-1 = padding), the positions."""
    return [row[row >= 0] for row in positions]


@dataclass
class _Decisions:
    """Per pruning layer and row of the reference: the original positions entering the layer and their scores."""

    rules: list[LayerRule]
    entering: dict[str, list[np.ndarray]]
    scores: dict[str, list[np.ndarray]]


def _ambiguous(rule: LayerRule, entering: np.ndarray, scores: np.ndarray, reference: np.ndarray, other: np.ndarray) -> bool:
    """True when every token the two sides decided differently was a float-ambiguous decision."""
    differ = np.setxor1d(reference, other)
    where = {int(p): i for i, p in enumerate(entering)}
    if differ.size == 0 or any(int(p) not in where for p in differ):
        return False
    if rule.threshold is not None:
        return bool(within_margin(scores[[where[int(p)] for p in differ]], rule.threshold).all())
    kept = np.isin(entering, reference)
    for p in differ:
        i = where[int(p)]
        if not within_margin(scores[kept != kept[i]], float(scores[i])).any():
            return False
    return True


def _compare(name, batch_size, layers, left, right, decisions: _Decisions | None = None) -> Comparison:
    """`left`/`right`: (logits per row, {layer name: list of position arrays per row}); `left` is the
    reference whose scores `decisions` holds (None: every differing row is a mismatch). A row's logits
    are [C] (sequence head) or [2, n] (span head: start and end at the row's n positions)."""
    rows = len(left[0])
    first_differing = {}
    for j, layer in enumerate(layers):
        for r, (a, b) in enumerate(zip(left[1][layer], right[1][layer])):
            if r not in first_differing and not np.array_equal(a, b):
                first_differing[r] = j
    ambiguous = sorted(
        r for r, j in first_differing.items()
        if decisions is not None and _ambiguous(
            decisions.rules[j], decisions.entering[layers[j]][r], decisions.scores[layers[j]][r],
            left[1][layers[j]][r], right[1][layers[j]][r],
        )
    )
    diff = np.array([np.abs(a - b).max() for a, b in zip(left[0], right[0])])
    clear = np.ones(rows, dtype=bool)
    clear[ambiguous] = False
    comp = Comparison(name, batch_size, rows, ambiguous_examples=ambiguous)
    if clear.any():
        comp.max_abs_logit_diff = float(diff[clear].max())
        comp.worst_example = int(np.flatnonzero(clear)[diff[clear].argmax()])
    comp.prediction_agreement = float(np.mean([np.array_equal(a.argmax(-1), b.argmax(-1)) for a, b in zip(left[0], right[0])]))
    for layer in layers:
        same = np.array([np.array_equal(a, b) for a, b in zip(left[1][layer], right[1][layer])], dtype=bool)
        comp.kept_agreement[layer] = float(np.mean(same))
        comp.kept_ambiguous_rows[layer] = int((~same & ~clear).sum())
        comp.kept_mismatch_rows[layer] = int((~same & clear).sum())
    return comp


def _row_logits(outputs: Sequence[np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
    """Per row, the logits parity compares: [C] of a sequence head's `logits`, [2, n] of a span head's
    (start, end) at the row's n non-padding positions."""
    if len(outputs) == 1:
        return list(outputs[0])
    lengths = mask.sum(axis=1)
    return [np.stack([o[r, :n] for o in outputs]) for r, n in enumerate(lengths)]


def _torch_outputs(out, head: str) -> list[np.ndarray]:
    return [out.logits.numpy()] if head == "sequence" else [out.start_logits.numpy(), out.end_logits.numpy()]


def check_parity(
    encoder: PrunedEncoder,
    session: PrunedSession,
    examples: Sequence[TextExample] | None,
    batch_sizes: Sequence[int] = (1, 8),
    atol: float = DEFAULT_ATOL,
    compare_mask_mode: bool = True,
    progress: bool = True,
    rows: Sequence[tuple[list[int], list[int]]] | None = None,
) -> ParityReport:
    """Compare `encoder` (drop mode) with the artifact `session` on `examples` (or on token `rows`,
    (input_ids, token_type_ids) each: a QA model's windows); see module docstring."""
    layers = [kept_output_name(layer) for layer in encoder.pruning_layers]
    rules = [encoder.config.rule_for(layer) for layer in encoder.pruning_layers] if encoder.config is not None else []
    masked = wrap(encoder.model, encoder.config, "mask") if compare_mask_mode and encoder.config is not None else None
    rows = rows if rows is not None else session.text_encoder.token_ids(examples)
    outputs = HEADS[encoder.head]
    captured: dict[int, np.ndarray] = {}
    previous_hook = encoder.score_hook
    encoder.score_hook = lambda index, score, mask: captured.__setitem__(index, score.detach().numpy().copy())
    comparisons = []
    try:
        for batch_size in batch_sizes:
            sides: dict[str, tuple[list, dict]] = {k: ([], {name: [] for name in layers}) for k in ("torch", "ort", "mask")}
            decisions = _Decisions(rules, {name: [] for name in layers}, {name: [] for name in layers})
            starts = range(0, len(rows), batch_size)
            for start in tqdm(starts, desc=f"parity batch {batch_size}", disable=not progress):
                feeds = session.text_encoder.pad(rows[start : start + batch_size])
                tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
                args = (tensors["input_ids"], tensors["attention_mask"], tensors["token_type_ids"])
                captured.clear()
                with torch.no_grad():
                    ref = encoder(*args)
                    mref = masked(*args) if masked is not None else None
                raw = session.run(feeds)
                ort_out = {**raw, **original_positions(raw)}
                sides["torch"][0].extend(_row_logits(_torch_outputs(ref, encoder.head), feeds["attention_mask"]))
                sides["ort"][0].extend(_row_logits([ort_out[name] for name in outputs], feeds["attention_mask"]))
                # the tokens entering each pruning layer and their scores: the input's, then the previous
                # pruning layer's kept tokens, packed to the left (drop mode), in their original order
                entering = _present(feeds["attention_mask"])
                for name, layer, kept in zip(layers, encoder.pruning_layers, ref.kept):
                    for positions, score in zip(entering, captured[layer]):
                        decisions.entering[name].append(positions)
                        decisions.scores[name].append(score[: len(positions)])
                    entering = _present(kept.numpy())
                    sides["torch"][1][name].extend(entering)
                    sides["ort"][1][name].extend(_drop_positions(ort_out[name]))
                if mref is not None:
                    sides["mask"][0].extend(_row_logits(_torch_outputs(mref, encoder.head), feeds["attention_mask"]))
                    for name, kept in zip(layers, mref.kept):
                        sides["mask"][1][name].extend(_present(kept.numpy()))
            joined = {k: v for k, v in sides.items() if v[0]}
            comparisons.append(_compare("pytorch-drop vs onnxruntime", batch_size, layers, joined["torch"], joined["ort"], decisions))
            if "mask" in joined:
                comparisons.append(_compare("pytorch-drop vs pytorch-mask", batch_size, layers, joined["torch"], joined["mask"], decisions))
    finally:
        encoder.score_hook = previous_hook
    return ParityReport(comparisons, atol)
