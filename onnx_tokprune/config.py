"""`tokprune.json`: the pruning configuration that travels from checkpoint to artifact.

One file beside a Hugging Face checkpoint says which layers prune and how:

```json
{"version": 1, "method": "calibrated", "rule": "threshold",
 "score_normalizer": "fixed", "normalizer_length": 128,
 "layers": [{"layer": 1, "threshold": 0.0041}, {"layer": 3, "threshold": 0.0105}],
 "provenance": {"tool": "tokprune-calibrate", "keep": 0.5}}
```

`layer` is the 0-based encoder layer whose attention scores decide; the tokens it removes leave
right after that layer's attention (docs/design.md §2). Rules and their per-layer parameter:

- ``threshold`` (LTP): ``threshold`` — keep j iff score >= threshold.
- ``rank_bins`` (ToP): ``bin_mask`` — one 0/1 per rank bin; every layer has the same bin count.
  Top-level ``bin_rounding``: ``"exact"`` (default, floor(rank * B / n) in integers) or ``"top"``
  (the float32 expression of ToP's released code; set by the ToP importer).
- ``top_k`` (calibration / static baselines): ``keep_ratio`` in (0, 1] — keep the top ceil(r * n)
  (computed as ceil(r * n * (1 - 1e-6)) in float32, so 0.15 of 100 keeps 15).

Optional top-level ``protect``: ``"second_text"`` — every decision adds PROTECT_BONUS
(modeling.encoder) to the score of each token whose token type id is 1 (a pair's second text and its
closing separator, e.g. an NLI hypothesis), in PyTorch and in the exported graph alike. The threshold
rule then keeps them all; the rank rules (rank_bins, top_k) rank them above every other token, so they
fill the kept budget first. It needs a model that tells the two texts apart by token type ids
(type_vocab_size >= 2: BERT, ALBERT, ELECTRA, MiniLM; not RoBERTa or DistilBERT).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnx_tokprune.errors import ConfigError
from onnx_tokprune.io import read_json, write_json_atomic

CONFIG_NAME = "tokprune.json"
FORMAT_VERSION = 1
METHODS = ("calibrated", "ltp", "top", "static")
RULES = {"threshold": "threshold", "rank_bins": "bin_mask", "top_k": "keep_ratio"}
NORMALIZERS = ("fixed", "length")
BIN_ROUNDINGS = ("exact", "top")
PROTECTS = ("second_text",)
_TOP_KEYS = {"version", "method", "rule", "score_normalizer", "normalizer_length", "bin_rounding", "protect", "layers", "provenance"}


@dataclass(frozen=True)
class LayerRule:
    """Decision parameters of one pruning layer."""

    layer: int
    threshold: float | None = None
    bin_mask: tuple[int, ...] | None = None
    keep_ratio: float | None = None

    def op_params(self) -> tuple[float, tuple[int, ...], float]:
        """(threshold, bin_mask, keep_ratio) for the TokenPrune op, unused ones neutral."""
        return (
            0.0 if self.threshold is None else float(self.threshold),
            (1,) if self.bin_mask is None else tuple(self.bin_mask),
            1.0 if self.keep_ratio is None else float(self.keep_ratio),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layer": self.layer}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.bin_mask is not None:
            out["bin_mask"] = list(self.bin_mask)
        if self.keep_ratio is not None:
            out["keep_ratio"] = self.keep_ratio
        return out


@dataclass(frozen=True)
class PruneConfig:
    """A validated pruning configuration (see the module docstring for the file format)."""

    rule: str
    layers: tuple[LayerRule, ...]
    method: str = "calibrated"
    score_normalizer: str = "fixed"
    normalizer_length: int = 128
    provenance: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION
    bin_rounding: str = "exact"
    protect: str | None = None
    """"second_text": each decision ranks the tokens of token type 1 above all others (module docstring)."""

    def __post_init__(self) -> None:
        if type(self.version) is not int:
            raise ConfigError(f"version must be the integer {FORMAT_VERSION}, got {self.version!r}")
        if self.version != FORMAT_VERSION:
            raise ConfigError(f"version {self.version!r} is not supported (expected {FORMAT_VERSION})")
        for name in ("method", "rule", "score_normalizer", "bin_rounding"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, got {type(value).__name__} {value!r}")
        if not isinstance(self.provenance, dict):
            raise ConfigError(f"provenance must be a JSON object, got {type(self.provenance).__name__} {self.provenance!r}")
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} is unknown; use one of {', '.join(METHODS)}")
        if self.rule not in RULES:
            raise ConfigError(f"rule {self.rule!r} is unknown; use one of {', '.join(RULES)}")
        if self.score_normalizer not in NORMALIZERS:
            raise ConfigError(
                f"score_normalizer {self.score_normalizer!r} is unknown; use 'fixed' or 'length'"
            )
        if isinstance(self.normalizer_length, bool) or not isinstance(self.normalizer_length, int) or self.normalizer_length < 1:
            raise ConfigError(f"normalizer_length must be a positive integer, got {self.normalizer_length!r}")
        if self.bin_rounding not in BIN_ROUNDINGS:
            raise ConfigError(f"bin_rounding {self.bin_rounding!r} is unknown; use 'exact' or 'top'")
        if self.bin_rounding != "exact" and self.rule != "rank_bins":
            raise ConfigError(f"bin_rounding {self.bin_rounding!r} only applies to rule 'rank_bins'")
        check_protect(self.protect, 2)
        if not self.layers:
            raise ConfigError("layers is empty: list at least one pruning layer")
        seen = [r.layer for r in self.layers]
        if seen != sorted(set(seen)):
            raise ConfigError(f"layers must be listed once each in increasing order, got {seen}")
        bins = {len(r.bin_mask) for r in self.layers if r.bin_mask is not None}
        if len(bins) > 1:
            raise ConfigError(f"every layer's bin_mask must have the same length, got lengths {sorted(bins)}")
        for r in self.layers:
            self._check_layer(r)

    def _check_layer(self, r: LayerRule) -> None:
        where = f"layers[layer={r.layer}]"
        if not isinstance(r.layer, int) or r.layer < 0:
            raise ConfigError(f"{where}: layer must be a non-negative integer")
        wanted = RULES[self.rule]
        given = {k for k in RULES.values() if getattr(r, k) is not None}
        if given != {wanted}:
            raise ConfigError(f"{where}: rule {self.rule!r} needs exactly the field {wanted!r}, got {sorted(given)}")
        if r.threshold is not None and not (math.isfinite(r.threshold) and r.threshold >= 0):
            raise ConfigError(f"{where}: threshold must be a finite number >= 0, got {r.threshold!r}")
        if r.threshold is not None and self.score_normalizer == "length" and r.threshold > 1:
            raise ConfigError(
                f"{where}: threshold {r.threshold!r} can never be reached: with the length normaliser a score is a "
                "mean attention probability, at most 1, so every token would be removed; use a threshold <= 1"
            )
        if r.keep_ratio is not None and not (0 < r.keep_ratio <= 1):
            raise ConfigError(f"{where}: keep_ratio must be in (0, 1], got {r.keep_ratio!r}")
        if r.bin_mask is not None and (not r.bin_mask or any(type(b) is not int or b not in (0, 1) for b in r.bin_mask)):
            raise ConfigError(f"{where}: bin_mask must be a non-empty list of 0/1, got {list(r.bin_mask)!r}")

    @property
    def pruning_layers(self) -> tuple[int, ...]:
        return tuple(r.layer for r in self.layers)

    def rule_for(self, layer: int) -> LayerRule | None:
        return next((r for r in self.layers if r.layer == layer), None)

    def check_model(self, num_hidden_layers: int, max_positions: int | None = None, type_vocab_size: int | None = None) -> None:
        """Raise ConfigError when a pruning layer does not exist in a model of that depth, (given the
        model's max_position_embeddings) a fixed-normaliser threshold no score can reach, or (given its
        type_vocab_size) `protect` asks for token types the model does not have."""
        bad = [layer for layer in self.pruning_layers if layer >= num_hidden_layers]
        if bad:
            raise ConfigError(
                f"pruning layer(s) {bad} out of range: the model has {num_hidden_layers} layers (0..{num_hidden_layers - 1})"
            )
        if type_vocab_size is not None:
            check_protect(self.protect, type_vocab_size)
        if max_positions is None or self.score_normalizer != "fixed":
            return
        # s = (attention a token receives, summed over the n tokens of its row) / (heads * N) <= n / N
        bound = max_positions / self.normalizer_length
        for r in self.layers:
            if r.threshold is not None and r.threshold > bound:
                raise ConfigError(
                    f"layers[layer={r.layer}]: threshold {r.threshold!r} can never be reached: with the fixed normaliser "
                    f"(N={self.normalizer_length}) a score is at most tokens/N <= {max_positions}/{self.normalizer_length} = "
                    f"{bound:g} for this model, so every token would be removed; use a threshold <= {bound:g}"
                )

    def normalizer_constant(self) -> float | None:
        """N for the fixed normaliser, None for the per-row length normaliser."""
        return float(self.normalizer_length) if self.score_normalizer == "fixed" else None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": self.version,
            "method": self.method,
            "rule": self.rule,
            "score_normalizer": self.score_normalizer,
            "normalizer_length": self.normalizer_length,
        }
        if self.rule == "rank_bins":
            data["bin_rounding"] = self.bin_rounding
        if self.protect is not None:
            data["protect"] = self.protect
        data["layers"] = [r.to_json() for r in self.layers]
        data["provenance"] = self.provenance
        return data

    @classmethod
    def from_json(cls, data: Any) -> PruneConfig:
        if not isinstance(data, dict):
            raise ConfigError("tokprune.json must hold a JSON object")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise ConfigError(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
        for key in ("rule", "layers"):
            if key not in data:
                raise ConfigError(f"missing key {key!r}")
        if not isinstance(data["layers"], list):
            raise ConfigError("layers must be a list of {'layer': int, <parameter>: ...} objects")
        layers = []
        allowed = {"layer", *RULES.values()}
        for i, entry in enumerate(data["layers"]):
            if not isinstance(entry, dict) or "layer" not in entry:
                raise ConfigError(f"layers[{i}] must be an object with a 'layer' key")
            bad = set(entry) - allowed
            if bad:
                raise ConfigError(f"layers[{i}]: unknown key(s) {sorted(bad)}; allowed: {sorted(allowed)}")
            if not isinstance(entry["layer"], int) or isinstance(entry["layer"], bool):
                raise ConfigError(f"layers[{i}]: layer must be an integer, got {entry['layer']!r}")
            bm = entry.get("bin_mask")
            if bm is not None and not isinstance(bm, list):
                raise ConfigError(f"layers[{i}]: bin_mask must be a list of 0/1")
            layers.append(
                LayerRule(
                    layer=entry["layer"],
                    threshold=_number(entry.get("threshold"), f"layers[{i}].threshold"),
                    bin_mask=None if bm is None else tuple(bm),
                    keep_ratio=_number(entry.get("keep_ratio"), f"layers[{i}].keep_ratio"),
                )
            )
        kwargs = {k: data[k] for k in ("version", "method", "score_normalizer", "normalizer_length", "bin_rounding", "protect") if k in data}
        provenance = data.get("provenance", {})
        return cls(rule=data["rule"], layers=tuple(layers), provenance=dict(provenance) if isinstance(provenance, dict) else provenance, **kwargs)

    @classmethod
    def load(
        cls, path: str | os.PathLike, num_hidden_layers: int | None = None, max_positions: int | None = None,
        type_vocab_size: int | None = None,
    ) -> PruneConfig:
        """Read `tokprune.json` (a file, or a directory holding one) and validate it (against the model's
        depth, max_position_embeddings and type_vocab_size when given: `check_model`)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_NAME
        data = read_json(path, ConfigError, f"not found: a pruned checkpoint needs a {CONFIG_NAME} (run tokprune-calibrate)", f"fix or rewrite {CONFIG_NAME}")
        try:
            cfg = cls.from_json(data)
            if num_hidden_layers is not None:
                cfg.check_model(num_hidden_layers, max_positions, type_vocab_size)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        return cfg

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `tokprune.json` into a directory atomically."""
        return write_json_atomic(Path(directory) / CONFIG_NAME, self.to_json())


def check_protect(protect: str | None, type_vocab_size: int) -> None:
    """ConfigError when `protect` is unknown or asks for token types a model with `type_vocab_size` lacks."""
    if protect is not None and protect not in PROTECTS:
        raise ConfigError(f"protect {protect!r} is unknown; use {', '.join(map(repr, PROTECTS))} or leave it out")
    if protect == "second_text" and type_vocab_size < 2:
        raise ConfigError(
            f"protect 'second_text' finds the second text by its token type id 1, but this model has "
            f"{type_vocab_size} token type(s) (RoBERTa and DistilBERT do not mark the second text); remove 'protect'"
        )


def protected_counts(protect: str | None, rows) -> list[int] | None:
    """Per token row ((input_ids, token_type_ids), as TextEncoder.token_ids gives), how many tokens
    `protect` keeps at every layer; None when nothing is protected."""
    if protect is None:
        return None
    return [sum(1 for t in types if t == 1) for _, types in rows]


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return float(value)
