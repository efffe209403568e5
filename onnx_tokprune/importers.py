"""Convert released LTP and ToP checkpoints into ours (HF checkpoint dir + tokprune.json).

- ToP (microsoft/Moonlit ToP/): a BERT `pytorch_model.bin` (HF key names; LayerNorm may use the old
  gamma/beta names) + `zs.pt` = {"token_z": [locations, bins] 0/1, "pruner_z": [locations] 0/1}.
  Locations are the last `locations` layers (ToP prunes the input of layer `loc` with layer
  `loc - 1`'s attention), so location `loc` becomes our pruning layer `loc - 1`. Bins use ToP's
  float32 expression (`bin_rounding: "top"`). Layers whose pruner gate is 0, or whose bins are all
  open, do not prune and are left out. The importance score is ours (kept rows only, docs/design.md §2);
  ToP's released code also averages over the query rows of tokens it already masked.
- LTP (kssteven418/LTP): an I-BERT (RoBERTa) checkpoint, `config.json` with `model_type` "ltp",
  `prune_mode` "absolute_threshold" and `final_token_threshold`, weights under `ibert.` plus I-BERT's
  quantisation buffers and `ibert.encoder.layer.<i>.attention.self.pruner.keep_threshold` (the
  learned delta). Layer i's threshold is `final_token_threshold * i / L + delta_i`; LTP skips a layer
  whose threshold is exactly 0 and otherwise removes tokens scoring below max(1e-5, threshold),
  so that is what the imported config holds. Scores use the fixed normaliser N = 128 (LTP trains
  with inputs padded to 128).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from onnx_tokprune.config import LayerRule, PruneConfig
from onnx_tokprune.errors import ConversionError

LTP_MIN_THRESHOLD = 1e-5
ROBERTA_CONFIG_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
    "initializer_range", "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id", "id2label", "label2id",
    "finetuning_task", "problem_type",
)


def _read_config(source: Path) -> dict:
    if not source.is_dir():
        raise ConversionError(f"{source} is not a directory: pass the released checkpoint directory")
    path = source / "config.json"
    if not path.is_file():
        raise ConversionError(f"{source} has no config.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path} must hold a JSON object (a model config), not a {type(data).__name__}")
    return data


def _read_state_dict(source: Path) -> dict[str, torch.Tensor]:
    import pickle

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for name in ("pytorch_model.bin", "model.safetensors"):
        path = source / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".bin"):
                return torch.load(path, map_location="cpu", weights_only=True)
            return load_file(str(path))
        except (SafetensorError, OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise ConversionError(f"{path} is truncated or corrupt ({first}): download the released checkpoint again") from None
    raise ConversionError(f"{source} has no pytorch_model.bin or model.safetensors")


def _load_into(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> list[str]:
    """Load the keys the HF model has; raise when one of its weights is missing; return the dropped keys."""
    expected = model.state_dict()
    kept = {k: v for k, v in weights.items() if k in expected}
    missing = [k for k in expected if k not in kept and not k.endswith("position_ids")]
    if missing:
        raise ConversionError(f"{source}: {len(missing)} weight(s) missing, e.g. {missing[:3]}")
    for key, value in kept.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ConversionError(f"{source}: {key} has shape {tuple(value.shape)}, the config says {tuple(expected[key].shape)}")
    model.load_state_dict(kept, strict=False)
    return sorted(set(weights) - set(kept))


def _tokenizer(source: Path, tokenizer: str | None):
    """The released checkpoint's own tokenizer, or `tokenizer` (a directory or hub name)."""
    from onnx_tokprune.modeling import TOKENIZER_FILES_TEXT, CheckpointError, check_tokenizer_files, load_tokenizer

    if tokenizer is None:
        try:
            check_tokenizer_files(source)
        except CheckpointError:
            raise ConversionError(
                f"{source} has no tokenizer files ({TOKENIZER_FILES_TEXT}): pass --tokenizer with the tokenizer's directory or hub name"
            ) from None
    return load_tokenizer(tokenizer or source, local=tokenizer is None)


def _save(model, tok, output: str | os.PathLike, config: PruneConfig, force: bool) -> Path:
    from onnx_tokprune.training.common import save_checkpoint

    return save_checkpoint(model.eval(), tok, output, config, force)


def import_top(
    source: str | os.PathLike,
    output: str | os.PathLike,
    tokenizer: str | None = None,
    locations: list[int] | None = None,
    force: bool = False,
) -> PruneConfig:
    """Convert a ToP checkpoint dir (pytorch_model.bin + zs.pt + config.json) into ours."""
    from transformers import BertConfig, BertForSequenceClassification

    src = Path(source)
    hf = _read_config(src)
    if hf.get("model_type") != "bert":
        raise ConversionError(f"{src}: ToP checkpoints are BERT; config.json says model_type {hf.get('model_type')!r}")
    if not (src / "zs.pt").is_file():
        raise ConversionError(f"{src} has no zs.pt (ToP's gates): was it saved by ToP's trainer?")
    zs = torch.load(src / "zs.pt", map_location="cpu", weights_only=True)
    if not isinstance(zs, dict) or "token_z" not in zs or "pruner_z" not in zs:
        raise ConversionError(f"{src}/zs.pt must hold a dict with 'token_z' and 'pruner_z'")
    token_z = torch.as_tensor(zs["token_z"]).float().reshape(len(zs["token_z"]), -1)
    pruner_z = torch.as_tensor(zs["pruner_z"]).float().reshape(-1)
    count, num_layers = token_z.shape[0], hf["num_hidden_layers"]
    if pruner_z.shape[0] != count:
        raise ConversionError(f"{src}/zs.pt: token_z has {count} locations but pruner_z {pruner_z.shape[0]}")
    locations = list(locations) if locations else list(range(num_layers - count, num_layers))
    if len(locations) != count or any(not 1 <= loc < num_layers for loc in locations):
        raise ConversionError(f"locations {locations} must be {count} layers in 1..{num_layers - 1}")

    weights = {re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", k)): v for k, v in _read_state_dict(src).items()}
    model = BertForSequenceClassification(BertConfig.from_dict(hf))
    dropped = _load_into(model, weights, src)
    rules = tuple(
        LayerRule(loc - 1, bin_mask=tuple(int(v > 0) for v in token_z[p].tolist()))
        for p, loc in enumerate(locations)
        if pruner_z[p] > 0 and bool((token_z[p] <= 0).any())
    )
    if not rules:
        raise ConversionError(f"{src}/zs.pt prunes nowhere (every pruner gate 0 or every bin open)")
    config = PruneConfig(
        rule="rank_bins", method="top", score_normalizer="length", bin_rounding="top", layers=rules,
        provenance={"tool": "tokprune-import top", "source": str(src), "locations": locations,
                    "pruner_z": [int(v > 0) for v in pruner_z.tolist()], "dropped_keys": dropped},
    )
    _save(model, _tokenizer(src, tokenizer), output, config, force)
    return config


def import_ltp(
    source: str | os.PathLike,
    output: str | os.PathLike,
    tokenizer: str | None = None,
    normalizer_length: int = 128,
    force: bool = False,
) -> PruneConfig:
    """Convert an LTP (I-BERT) checkpoint dir into a RoBERTa checkpoint + threshold config."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    src = Path(source)
    hf = _read_config(src)
    if hf.get("model_type") not in ("ltp", "ibert"):
        raise ConversionError(f"{src}: expected an LTP checkpoint (model_type 'ltp'), got {hf.get('model_type')!r}")
    if hf.get("prune_mode") != "absolute_threshold" or "final_token_threshold" not in hf:
        raise ConversionError(
            f"{src}: only LTP's learned thresholds (prune_mode 'absolute_threshold' + final_token_threshold) convert; "
            f"got prune_mode {hf.get('prune_mode')!r}"
        )
    weights = {("roberta." + k[len("ibert."):] if k.startswith("ibert.") else k): v for k, v in _read_state_dict(src).items()}
    num_layers = hf["num_hidden_layers"]
    final = float(hf["final_token_threshold"])
    thresholds = {}
    for layer in range(num_layers):
        delta = weights.get(f"roberta.encoder.layer.{layer}.attention.self.pruner.keep_threshold")
        thresholds[layer] = final * layer / num_layers + (float(delta) if delta is not None else 0.0)
    rules = tuple(LayerRule(layer, threshold=max(LTP_MIN_THRESHOLD, t)) for layer, t in thresholds.items() if t != 0)
    if not rules:
        raise ConversionError(f"{src}: every layer's threshold is 0 (LTP prunes nowhere)")
    settings = {k: hf[k] for k in ROBERTA_CONFIG_KEYS if k in hf}
    model = RobertaForSequenceClassification(RobertaConfig(**settings))
    dropped = _load_into(model, weights, src)
    config = PruneConfig(
        rule="threshold", method="ltp", score_normalizer="fixed", normalizer_length=normalizer_length, layers=rules,
        provenance={"tool": "tokprune-import ltp", "source": str(src), "final_token_threshold": final,
                    "thresholds": {str(k): v for k, v in thresholds.items()}, "dropped_keys": len(dropped)},
    )
    _save(model, _tokenizer(src, tokenizer), output, config, force)
    return config
