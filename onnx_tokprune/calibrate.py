"""Training-free pruning: per-layer thresholds (or top-k ratios) from score statistics.

The kept fraction of non-CLS tokens falls over the pruning layers, reaching `keep` after the last
one: after the i-th of P pruning layers, c_i = 1 - (1 - keep) * (i + 1) / P of the tokens remain
(linear, the default) or c_i = keep ** ((i + 1) / P) (geometric: reaches lower FLOPs). With a FLOPs target, `keep` is solved so that the analytic FLOPs of that schedule, over the
calibration sentences' lengths, equal the target.

Thresholds are chosen layer by layer on the calibration sentences with the earlier layers already
pruning: layer i's threshold keeps the fraction c_i / c_{i-1} of the (pooled) tokens reaching it,
placed half-way between two neighbouring scores, in a gap wide enough that no calibration score is
within DECISION_RTOL of it (so no decision on the calibration data is float-ambiguous).

With `protect="second_text"` (PruneConfig.protect) every token of token type 1 is kept at every
layer: the schedule's fractions then apply to the other non-CLS tokens, thresholds are chosen among
their scores alone, and the FLOPs target counts the protected tokens as kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from onnx_tokprune.config import LayerRule, PruneConfig, check_protect, protected_counts
from onnx_tokprune.errors import CalibrationError
from onnx_tokprune.flops import EncoderShape, relative_flops
from onnx_tokprune.modeling import wrap
from onnx_tokprune.runtime.text_encoder import TextEncoder

CALIBRATION_RULES = ("threshold", "top_k")


@dataclass
class CalibrationResult:
    config: PruneConfig
    kept_fraction: dict[int, float] = field(default_factory=dict)
    relative_flops: float = 1.0


def default_layers(num_layers: int) -> list[int]:
    """All layers but the first and the last (the first layer's attention ranks tokens poorly)."""
    return list(range(1, num_layers - 1)) if num_layers > 2 else list(range(num_layers))


SCHEDULES = ("linear", "geometric")


def keep_schedule(keep: float, count: int, schedule: str = "linear") -> list[float]:
    """Cumulative kept fraction after each of `count` pruning layers, ending at `keep`.

    linear: 1 - (1 - keep) * (i + 1) / count; geometric: keep ** ((i + 1) / count) (the same
    fraction removed at every layer: prunes earlier, so it reaches lower FLOPs).
    """
    if schedule == "geometric":
        return [keep ** ((i + 1) / count) for i in range(count)]
    return [1 - (1 - keep) * (i + 1) / count for i in range(count)]


def schedule_flops(
    shape: EncoderShape, lengths: Sequence[int], layers: Sequence[int], keep: float, schedule: str = "linear",
    protected: Sequence[int] | None = None,
) -> float:
    """Relative FLOPs of the schedule over sentences of these lengths (`protected`: per sentence, the
    count of tokens kept at every layer besides CLS; the schedule applies to the rest)."""
    sched = keep_schedule(keep, len(layers), schedule)
    fixed = protected if protected is not None else [0] * len(lengths)
    kept = [{layer: 1 + p + c * (n - 1 - p) for layer, c in zip(layers, sched)} for n, p in zip(lengths, fixed)]
    return relative_flops(shape, lengths, kept)


def solve_keep(
    shape: EncoderShape, lengths: Sequence[int], layers: Sequence[int], target: float, schedule: str = "linear",
    protected: Sequence[int] | None = None,
) -> float:
    """The `keep` whose schedule meets a relative-FLOPs target (bisection)."""
    lowest = schedule_flops(shape, lengths, layers, 1e-9 if schedule == "geometric" else 0.0, schedule, protected)
    if not lowest <= target <= 1:
        kept = " with the protected tokens always kept" if protected is not None else ""
        raise CalibrationError(
            f"relative FLOPs {target} cannot be reached with pruning layers {list(layers)}{kept}: "
            f"the range is [{lowest:.3f}, 1]; add earlier pruning layers, use --schedule geometric or raise the target"
        )
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if schedule_flops(shape, lengths, layers, mid, schedule, protected) < target else (lo, mid)
    return (lo + hi) / 2


DECISION_RTOL = 1e-5
"""Relative distance from a threshold within which a score's decision is float-ambiguous: PyTorch,
the ONNX function and the compiled kernel sum the same attention probabilities in different orders,
so a score can move by a few ulps (fp32 ulp = 1.2e-7 relative) between them. Thresholds are placed
with at least this margin to every calibration score; parity reports decisions inside it apart."""


def within_margin(scores: np.ndarray, threshold: float, rtol: float = DECISION_RTOL) -> np.ndarray:
    """True where a score is so close to `threshold` that its keep/drop decision is float-ambiguous."""
    return np.abs(np.asarray(scores, dtype=np.float64) - threshold) <= rtol * max(abs(threshold), np.finfo(np.float32).tiny)


def threshold_with_margin(scores: np.ndarray, fraction: float, rtol: float = DECISION_RTOL) -> float:
    """A threshold keeping about `fraction` of `scores` (score >= threshold), half-way between two
    neighbouring distinct scores whose gap leaves every score outside the float-ambiguity margin.

    When the gap at the requested fraction is too narrow (ties), the nearest wide-enough gap is used
    (the kept fraction moves as little as possible). Raises CalibrationError when no gap is wide
    enough: all scores are equal within the margin, e.g. a tokenizer that maps every word to [UNK].
    """
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n = len(ordered)
    k = int(round(fraction * n))
    if k >= n:
        return 0.0
    candidates = sorted(range(1, n), key=lambda i: (abs(i - max(k, 1)), i))
    for i in candidates:
        high, low = ordered[i - 1], ordered[i]
        middle = (high + low) / 2
        if high > low and not within_margin(np.array([high, low]), middle, rtol).any():
            return float(np.float32(middle))
    raise CalibrationError(
        f"the {n} calibration scores do not separate: all are equal within a relative {rtol:g}, so no threshold "
        "can keep a fraction of them (is the tokenizer right? every token may be [UNK]); check the checkpoint and --data"
    )


def _threshold(scores: np.ndarray, fraction: float, layer: int) -> float:
    try:
        return threshold_with_margin(scores, fraction)
    except CalibrationError as e:
        raise CalibrationError(f"layer {layer}: {e}") from None


def _batches(text_encoder: TextEncoder, rows, batch_size: int):
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    for start in range(0, len(order), batch_size):
        feeds = text_encoder.pad([rows[i] for i in order[start : start + batch_size]])
        yield {k: torch.from_numpy(v) for k, v in feeds.items()}


def _collect_scores(encoder, text_encoder, rows, layer, batch_size) -> np.ndarray:
    found: list[np.ndarray] = []

    def hook(index: int, score: torch.Tensor, mask: torch.Tensor) -> None:
        if index == layer:
            valid = mask.bool().clone()
            valid[:, 0] = False
            if encoder.protected_now is not None:  # kept whatever the threshold: not part of its choice
                valid &= ~encoder.protected_now
            found.append(score[valid].detach().numpy())

    encoder.score_hook = hook
    with torch.no_grad():
        for feeds in _batches(text_encoder, rows, batch_size):
            encoder(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"])
    encoder.score_hook = None
    return np.concatenate(found)


def settle_thresholds(
    model, config: PruneConfig, text_encoder: TextEncoder, examples=None, batch_size: int = 32,
    rows: Sequence[tuple[list[int], list[int]]] | None = None,
) -> tuple[PruneConfig, dict[int, tuple[float, float]]]:
    """Trained thresholds with calibration's margin: a threshold that some score on `examples` (or
    token `rows`) sits within DECISION_RTOL of moves to the nearest gap wide enough
    (threshold_with_margin at the fraction it keeps now). Returns the config and {layer: (old, new)}
    for the thresholds that moved."""
    if config.rule != "threshold":
        return config, {}
    rows = rows if rows is not None else text_encoder.token_ids(examples)
    settled: list[LayerRule] = []
    moved: dict[int, tuple[float, float]] = {}
    for rule in config.layers:
        probe = PruneConfig(rule="threshold", layers=(*settled, LayerRule(rule.layer, threshold=0.0)),
                            score_normalizer=config.score_normalizer, normalizer_length=config.normalizer_length,
                            protect=config.protect)
        scores = _collect_scores(wrap(model, probe, "drop"), text_encoder, rows, rule.layer, batch_size)
        threshold = rule.threshold
        if within_margin(scores, threshold).any():
            threshold = _threshold(scores, float((scores >= threshold).mean()), rule.layer)
            moved[rule.layer] = (rule.threshold, threshold)
        settled.append(LayerRule(rule.layer, threshold=threshold))
    if not moved:
        return config, moved
    return dataclasses.replace(config, layers=tuple(settled)), moved


def measure(model, config: PruneConfig, text_encoder: TextEncoder, rows, batch_size: int = 32) -> tuple[dict[int, float], float]:
    """Kept fraction of non-CLS tokens (pooled over `rows`) per pruning layer, and relative FLOPs, on `rows`."""
    encoder = wrap(model, config, "drop")
    lengths: list[int] = []
    kept: list[dict[int, float]] = []
    with torch.no_grad():
        for feeds in _batches(text_encoder, rows, batch_size):
            out = encoder(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"])
            lengths.extend(feeds["attention_mask"].sum(1).tolist())
            counts = [k.sum(1).tolist() for k in out.kept]
            kept.extend({layer: c[r] for layer, c in zip(config.pruning_layers, counts)} for r in range(len(counts[0])))
    candidates = sum(n - 1 for n in lengths)
    fractions = {layer: sum(k[layer] - 1 for k in kept) / max(candidates, 1) for layer in config.pruning_layers}
    return fractions, relative_flops(EncoderShape.from_hf(model.config), lengths, kept)


def calibrate(
    model,
    text_encoder: TextEncoder,
    examples,
    *,
    keep: float | None = None,
    target_flops: float | None = None,
    rule: str = "threshold",
    layers: Sequence[int] | None = None,
    score_normalizer: str = "fixed",
    normalizer_length: int = 128,
    batch_size: int = 32,
    progress: bool = True,
    schedule: str = "linear",
    rows: Sequence[tuple[list[int], list[int]]] | None = None,
    protect: str | None = None,
) -> CalibrationResult:
    """Choose per-layer decision parameters for `model` from calibration `examples` (or token `rows`,
    (input_ids, token_type_ids) each: a QA model's windows). `protect`: PruneConfig.protect of the
    result ("second_text": the module docstring)."""
    if (keep is None) == (target_flops is None):
        raise CalibrationError("give exactly one of keep (kept-token fraction) or target_flops (relative FLOPs)")
    if schedule not in SCHEDULES:
        raise CalibrationError(f"schedule {schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")
    if rule not in CALIBRATION_RULES:
        raise CalibrationError(f"rule {rule!r} cannot be calibrated; use one of {', '.join(CALIBRATION_RULES)}")
    num_layers = model.config.num_hidden_layers
    layers = sorted(set(layers)) if layers else default_layers(num_layers)
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad:
        raise CalibrationError(f"layers {bad} out of range: the model has layers 0..{num_layers - 1}")
    rows = rows if rows is not None else text_encoder.token_ids(examples)
    base = dict(rule=rule, method="calibrated", score_normalizer=score_normalizer, normalizer_length=normalizer_length, protect=protect)
    check_protect(protect, getattr(model.config, "type_vocab_size", 1))
    if protect is not None and rule != "threshold":
        raise CalibrationError(f"protect {protect!r} is calibrated for the threshold rule only: {rule}'s keep ratio would count the protected tokens; use --rule threshold")
    protected = protected_counts(protect, rows)
    if protected is not None and not any(protected):
        raise CalibrationError("protect 'second_text' but no calibration input has a second text: calibrate on pair data")
    shape = EncoderShape.from_hf(model.config)
    if target_flops is not None:
        if not 0 < target_flops <= 1:
            raise CalibrationError(f"target FLOPs must be in (0, 1], got {target_flops}")
        keep = solve_keep(shape, [len(r[0]) for r in rows], layers, target_flops, schedule, protected)
    if not 0 < keep <= 1:
        raise CalibrationError(f"keep must be in (0, 1], got {keep}")
    sched = keep_schedule(keep, len(layers), schedule)
    steps = [c / p for c, p in zip(sched, [1.0, *sched[:-1]])]
    chosen: list[LayerRule] = []
    for layer, step in tqdm(list(zip(layers, steps)), desc="calibrating layers", disable=not progress):
        if rule == "top_k":
            chosen.append(LayerRule(layer, keep_ratio=min(1.0, max(step, 1e-6))))
            continue
        probe = PruneConfig(layers=(*chosen, LayerRule(layer, threshold=0.0)), **base)
        scores = _collect_scores(wrap(model, probe, "drop"), text_encoder, rows, layer, batch_size)
        chosen.append(LayerRule(layer, threshold=_threshold(scores, step, layer)))
    provenance = {
        "tool": "tokprune-calibrate",
        "keep": keep,
        "target_flops": target_flops,
        "schedule_kind": schedule,
        "schedule": dict(zip(map(str, layers), sched)),
        "samples": len(rows),
    }
    if protected is not None:
        provenance["protected_tokens"] = sum(protected)
    config = PruneConfig(layers=tuple(chosen), provenance=provenance, **base)
    fractions, rel = measure(model, config, text_encoder, rows, batch_size)
    config.provenance.update({"measured_kept_fraction": {str(k): v for k, v in fractions.items()}, "measured_relative_flops": rel})
    return CalibrationResult(config, fractions, rel)

