"""Pruned encoders: one generic forward, one small adapter per architecture."""

from __future__ import annotations

import json
import os
from pathlib import Path

from onnx_tokprune.config import CONFIG_NAME, PruneConfig
from onnx_tokprune.modeling.bert import BertAdapter
from onnx_tokprune.modeling.encoder import MODES, PrunedEncoder, PrunedOutput
from onnx_tokprune.modeling.roberta import RobertaAdapter

ADAPTERS = {t: a for a in (BertAdapter, RobertaAdapter) for t in a.model_types}


class CheckpointError(ValueError):
    """A model directory that cannot be loaded; the message says what to do."""


def read_model_type(model_dir: str | os.PathLike) -> dict:
    """Return the HF config.json of a checkpoint dir after checking it is one we support."""
    path = Path(model_dir)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory: pass a Hugging Face checkpoint directory")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no config.json: is it a Hugging Face save_pretrained directory?")
    hf = json.loads(cfg_file.read_text())
    if hf.get("model_type") not in ADAPTERS:
        raise CheckpointError(
            f"{path}: architecture {hf.get('model_type')!r} is not supported (supported: {', '.join(sorted(ADAPTERS))})"
        )
    return hf


def wrap(model, config: PruneConfig | None, mode: str = "drop", **kwargs) -> PrunedEncoder:
    """Wrap a loaded HF sequence classifier into a PrunedEncoder (eval mode)."""
    adapter = ADAPTERS[model.config.model_type](model)
    return PrunedEncoder(adapter, config, mode, **kwargs).eval()


def load_pruned(
    model_dir: str | os.PathLike, mode: str = "drop", require_config: bool = True, num_labels: int | None = None
) -> PrunedEncoder:
    """Load `model_dir` (HF checkpoint + tokprune.json) as a PrunedEncoder."""
    from transformers import AutoModelForSequenceClassification

    hf = read_model_type(model_dir)
    config = None
    if require_config or (Path(model_dir) / CONFIG_NAME).is_file():
        config = PruneConfig.load(model_dir, num_hidden_layers=hf["num_hidden_layers"])
    kwargs = {} if num_labels is None else {"num_labels": num_labels}
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), **kwargs)
    return wrap(model, config, mode)


__all__ = ["ADAPTERS", "CheckpointError", "MODES", "PrunedEncoder", "PrunedOutput", "load_pruned", "read_model_type", "wrap"]
