"""Parity: the PyTorch drop-mode model vs the ONNX artifact in onnxruntime, on real text.

For each batch size, examples are run in file order (batch 1 unpadded; larger batches ragged and
right-padded the same way for both sides) and compared on:
- per pruning layer, the fraction of rows whose kept set (original positions) is identical;
- max |Δlogit| over all rows;
- prediction (argmax) agreement.
The PyTorch drop mode is also compared with the mask mode (the papers' simulation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from onnx_tokprune.data.text import TextExample
from onnx_tokprune.export.exporter import kept_output_name
from onnx_tokprune.modeling import PrunedEncoder, wrap
from onnx_tokprune.runtime.session import PrunedSession, original_positions

DEFAULT_ATOL = 1e-4


class ParityError(AssertionError):
    """The artifact does not compute what the PyTorch model computes."""


class KeptSetError(ParityError):
    """A pruning layer kept different tokens in onnxruntime than in PyTorch."""


class AtolError(ParityError):
    """Logits differ by more than the tolerance."""


@dataclass
class Comparison:
    """One side-by-side run: `name` says which two models, `batch_size` how they were batched."""

    name: str
    batch_size: int
    examples: int
    kept_agreement: dict[str, float] = field(default_factory=dict)
    kept_mismatch_rows: dict[str, int] = field(default_factory=dict)
    max_abs_logit_diff: float = 0.0
    worst_example: int = -1
    prediction_agreement: float = 1.0


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
        layers = sorted({k for c in self.comparisons for k in c.kept_agreement}, key=lambda k: int(k.rsplit("_", 1)[1]))
        head = ["comparison", "batch", "examples", *[f"kept agree L{k.rsplit('_', 1)[1]}" for k in layers], "max abs Δlogit", "pred agree"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in self.comparisons:
            cells = [c.name, str(c.batch_size), str(c.examples)]
            cells += [f"{100 * c.kept_agreement.get(k, float('nan')):.2f}%" for k in layers]
            cells += [f"{c.max_abs_logit_diff:.2e}", f"{100 * c.prediction_agreement:.2f}%"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _mask_to_positions(mask: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(row) for row in mask]


def _drop_positions(kept: np.ndarray) -> list[np.ndarray]:
    return [row[row >= 0] for row in kept]


def _compare(name, batch_size, layers, left, right) -> Comparison:
    """`left`/`right`: (logits [N,C], {layer name: list of position arrays per row})."""
    diff = np.abs(left[0] - right[0]).max(axis=-1)
    comp = Comparison(name, batch_size, len(diff))
    comp.max_abs_logit_diff = float(diff.max())
    comp.worst_example = int(diff.argmax())
    comp.prediction_agreement = float((left[0].argmax(-1) == right[0].argmax(-1)).mean())
    for layer in layers:
        same = [np.array_equal(a, b) for a, b in zip(left[1][layer], right[1][layer])]
        comp.kept_agreement[layer] = float(np.mean(same))
        comp.kept_mismatch_rows[layer] = int(len(same) - sum(same))
    return comp


def check_parity(
    encoder: PrunedEncoder,
    session: PrunedSession,
    examples: Sequence[TextExample],
    batch_sizes: Sequence[int] = (1, 8),
    atol: float = DEFAULT_ATOL,
    compare_mask_mode: bool = True,
    progress: bool = True,
) -> ParityReport:
    """Compare `encoder` (drop mode) with the artifact `session` on `examples`; see module docstring."""
    layers = [kept_output_name(layer) for layer in encoder.pruning_layers]
    masked = wrap(encoder.model, encoder.config, "mask") if compare_mask_mode and encoder.config is not None else None
    rows = session.text_encoder.token_ids(examples)
    comparisons = []
    for batch_size in batch_sizes:
        sides: dict[str, tuple[list, dict]] = {k: ([], {name: [] for name in layers}) for k in ("torch", "ort", "mask")}
        starts = range(0, len(rows), batch_size)
        for start in tqdm(starts, desc=f"parity batch {batch_size}", disable=not progress):
            feeds = session.text_encoder.pad(rows[start : start + batch_size])
            tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
            args = (tensors["input_ids"], tensors["attention_mask"], tensors["token_type_ids"])
            with torch.no_grad():
                ref = encoder(*args)
                mref = masked(*args) if masked is not None else None
            raw = session.run(feeds)
            ort_out = {**raw, **original_positions(raw)}
            sides["torch"][0].append(ref.logits.numpy())
            sides["ort"][0].append(ort_out["logits"])
            for name, kept in zip(layers, ref.kept):
                sides["torch"][1][name].extend(_drop_positions(kept.numpy()))
                sides["ort"][1][name].extend(_drop_positions(ort_out[name]))
            if mref is not None:
                sides["mask"][0].append(mref.logits.numpy())
                for name, kept in zip(layers, mref.kept):
                    sides["mask"][1][name].extend(_mask_to_positions(kept.numpy()))
        joined = {k: (np.concatenate(v[0]), v[1]) for k, v in sides.items() if v[0]}
        comparisons.append(_compare("pytorch-drop vs onnxruntime", batch_size, layers, joined["torch"], joined["ort"]))
        if "mask" in joined:
            comparisons.append(_compare("pytorch-drop vs pytorch-mask", batch_size, layers, joined["torch"], joined["mask"]))
    return ParityReport(comparisons, atol)
