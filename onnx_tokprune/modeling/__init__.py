"""Pruned encoders: one generic forward, one small adapter per architecture; checkpoint loading."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from onnx_tokprune.architectures import spec_for
from onnx_tokprune.artifact import HEAD_CLASSES, head_kind
from onnx_tokprune.config import CONFIG_NAME, PruneConfig
from onnx_tokprune.errors import CheckpointError, first_line
from onnx_tokprune.modeling.encoder import MODES, PrunedEncoder, PrunedOutput, kept_positions

WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILE_SETS = (
    ("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"), ("spiece.model",), ("sentencepiece.bpe.model",), ("tokenizer.model",),
)
TOKENIZER_FILES_TEXT = "tokenizer.json, vocab.txt, vocab.json + merges.txt, or a sentencepiece model"
HEADS = ("trained", "if_missing", "new")
"""What `load_classifier` accepts: "trained" a sequence classifier and its head; "if_missing" that or a
bare encoder (new head); "new" also a pretraining checkpoint (*ForMaskedLM, *ForPreTraining), and the
head is re-initialised where its shape differs (fine-tuning)."""
PRETRAINING_SUFFIXES = ("ForMaskedLM", "ForPreTraining")


def looks_like_path(name: str | os.PathLike) -> bool:
    """True for an argument that can only be a local path: it exists, is absolute, starts with '.' or
    '~', has a backslash or trailing slash, or has more '/' than a hub id ('name' or 'org/name')."""
    text = str(name)
    if isinstance(name, Path) or Path(text).expanduser().exists():
        return True
    return text.startswith((".", "~", "/")) or text.endswith("/") or text.count("/") > 1 or "\\" in text or (os.sep != "/" and os.sep in text)


def local_checkpoint(path_or_name: str | os.PathLike) -> Path | None:
    """The local directory `path_or_name` names, None for a hub name; CheckpointError when it looks
    like a path but is missing or not a directory."""
    if not looks_like_path(path_or_name):
        return None
    path = Path(path_or_name).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path_or_name} not found: pass a Hugging Face checkpoint directory")
    if not path.is_dir():
        raise CheckpointError(f"{path_or_name} is not a directory: pass a Hugging Face checkpoint directory")
    return path


def read_model_type(model_dir: str | os.PathLike) -> dict:
    """Return the HF config.json of a checkpoint dir after checking it is one we support."""
    path = local_checkpoint(Path(model_dir))
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no config.json: is it a Hugging Face save_pretrained directory?")
    try:
        hf = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON ({first_line(e)}): save the checkpoint again with save_pretrained") from None
    except OSError as e:
        raise CheckpointError(f"{cfg_file} cannot be read: {first_line(e)}") from None
    if not isinstance(hf, dict):
        raise CheckpointError(f"{cfg_file} must hold a JSON object (a Hugging Face model config), not a {type(hf).__name__}")
    check_model_config(hf, str(cfg_file))
    return hf


def check_model_config(hf: dict, where: str) -> None:
    """A supported model_type and the structural keys HF would otherwise fill with silent defaults."""
    spec = spec_for(hf, where)
    for key in spec.fields.required():
        value = hf.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problem = "is missing" if key not in hf else f"must be a positive integer, got {value!r}"
            raise CheckpointError(f"{where}: {key} {problem}: the config does not describe the saved model; save the checkpoint again")


def _head_problem(architectures: Any, head: str, kinds: tuple[str, ...] = ("sequence",)) -> str | None:
    """Why a checkpoint's `architectures` cannot be used with `head` by a command that runs `kinds`, or None."""
    names = [a for a in architectures if isinstance(a, str)] if isinstance(architectures, list) else []
    if not names:
        return None
    kind = head_kind(names)
    if kind in kinds:
        return None
    arch = names[0]
    base = arch.endswith("Model") and "For" not in arch
    pretraining = arch.endswith(PRETRAINING_SUFFIXES)
    if head == "new" and (base or pretraining):
        return None
    if head == "if_missing" and base:
        return None
    if head == "trained" and base:
        return f"is a bare encoder ({arch}) without a classification head: fine-tune it first (tokprune-train finetune) or calibrate it (tokprune-calibrate adds a new head)"
    heads = " or ".join(f"a {'sequence classifier' if k == 'sequence' else 'question-answering model'} (*{HEAD_CLASSES[k]})" for k in kinds)
    if head == "if_missing":
        heads += " or a bare encoder (e.g. BertModel, which gets a new head)"
    elif head == "new":
        heads += ", a bare encoder (e.g. BertModel) or a pretraining checkpoint (*ForMaskedLM, *ForPreTraining)"
    return f"{arch} checkpoints are not supported: this command takes {heads}"


def check_tokenizer_files(model_dir: str | os.PathLike, fast: bool = False) -> None:
    """CheckpointError when a checkpoint directory holds no tokenizer files (HF would silently build
    a tokenizer that maps every word to [UNK]), or with `fast` no tokenizer.json (what an artifact uses)."""
    path = Path(model_dir)
    if not any(all((path / name).is_file() for name in group) for group in TOKENIZER_FILE_SETS):
        raise CheckpointError(f"{path} has no tokenizer files ({TOKENIZER_FILES_TEXT}): copy them from the model you fine-tuned")
    if fast and not (path / "tokenizer.json").is_file():
        raise CheckpointError(
            f"{path} has no tokenizer.json, which the artifact needs: write it with "
            f"AutoTokenizer.from_pretrained('{path}').save_pretrained('{path}')"
        )


def check_checkpoint(
    path_or_name: str | os.PathLike, head: str = "trained", tokenizer: bool = True, local: bool = True,
    kinds: tuple[str, ...] = ("sequence",),
) -> dict:
    """Cheap checks before anything is loaded or written: the config, the head (one of the HEAD_KINDS
    `kinds` the command runs), the weights and tokenizer files of a local directory (hub names, with
    `local=False`, are checked by loading their config). Returns the config as a dict."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    path = local_checkpoint(Path(path_or_name) if local else path_or_name)
    if path is None:
        hf = _hub_config(str(path_or_name))
        where = str(path_or_name)
    else:
        hf = read_model_type(path)
        where = str(path)
        if not any((path / name).is_file() for name in WEIGHTS_FILES):
            raise CheckpointError(f"{path} has no weights file ({' or '.join(WEIGHTS_FILES[::2])}): it is not a complete checkpoint; save it again with save_pretrained")
        if tokenizer:
            check_tokenizer_files(path)
    problem = _head_problem(hf.get("architectures"), head, kinds)
    if problem:
        raise CheckpointError(f"{where}: {problem}")
    return hf


def _hub_config(name: str) -> dict:
    from transformers import AutoConfig

    with _quiet_loading():
        try:
            hf = AutoConfig.from_pretrained(name).to_dict()
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"{name} is not a local directory, and loading it from the Hugging Face hub failed: {first_line(e)}"
            ) from None
    check_model_config(hf, name)
    return hf


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """No progress bars, load reports or warnings from transformers / huggingface_hub while loading:
    a failing command prints one error line, and our own checks replace the load report."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    verbosity, hub_verbosity, bar = hf_logging.get_verbosity(), hub_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hub_logging.set_verbosity(hub_verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _weights_file(path: Path | None) -> str:
    if path is None:
        return "the weights"
    return str(next((path / name for name in WEIGHTS_FILES if (path / name).is_file()), path))


def load_classifier(
    path_or_name: str | os.PathLike,
    head: str = "trained",
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    local: bool = True,
    kinds: tuple[str, ...] = ("sequence",),
    num_layers: int | None = None,
):
    """Load a sequence classifier or span model (eval mode) after `check_checkpoint`; every loading failure (corrupt or
    missing weights, weights that do not match config.json, an unusable head) is one CheckpointError line.
    `num_layers`: keep only the checkpoint's first N encoder layers (the "fewer layers" baseline).

    `head` (see HEADS): with "if_missing", `num_labels` sizes a new head for a bare encoder; with "new"
    `num_labels` and `id2label` always apply. `local=False` also accepts hub names. `kinds`: the heads
    (artifact.HEAD_CLASSES) the caller runs; a checkpoint of one of them loads as that kind, anything else as the
    first (a new head where `head` allows it).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    hf = check_checkpoint(path_or_name, head, tokenizer=False, local=local, kinds=kinds)
    path = local_checkpoint(Path(path_or_name) if local else path_or_name)
    src = str(path) if path is not None else str(path_or_name)
    if num_labels is not None and num_labels < 1:
        raise CheckpointError(f"num_labels must be at least 1, got {num_labels}")
    found = head_kind(hf.get("architectures"))
    kind = found if found in kinds else kinds[0]
    new_head = head == "new" or (head == "if_missing" and found != kind)
    loader = AutoModelForQuestionAnswering if kind == "span" else AutoModelForSequenceClassification
    kwargs: dict[str, Any] = {}
    if num_layers is not None:
        kwargs.update(_first_layers(hf, num_layers, src))
    if new_head and kind == "sequence":
        if id2label:
            kwargs.update(id2label=dict(id2label), label2id={v: k for k, v in id2label.items()})
        if num_labels is not None:
            kwargs["num_labels"] = num_labels
    with _quiet_loading():
        try:
            model, info = loader.from_pretrained(
                src, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            )
        except SafetensorError as e:
            raise CheckpointError(f"{_weights_file(path)} is truncated or corrupt ({first_line(e)}): save the checkpoint again") from None
        except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            raise CheckpointError(f"{src} cannot be loaded: {first_line(e)}; save the checkpoint again") from None
    _check_loading_info(model, info, src, _weights_file(path), new_head_ok=new_head)
    return model.eval()


def _first_layers(hf: dict, num_layers: int, src: str) -> dict[str, int]:
    """The config override that builds only the first `num_layers` layers (HF then loads their weights
    and ignores the rest); CheckpointError unless 1 <= num_layers <= the checkpoint's layers."""
    field = spec_for(hf, src).fields.layers
    total = hf.get(field)
    if type(num_layers) is not int or not 1 <= num_layers <= (total or 0):
        raise CheckpointError(f"{src} has {total} layers: the number of layers to keep must be 1 to {total}, got {num_layers}")
    return {field: num_layers}


def _check_loading_info(model, info: dict, src: str, weights: str, new_head_ok: bool) -> None:
    """Refuse weights that do not fill the model config.json describes (a freshly initialised head
    only where `new_head_ok`)."""
    prefix = f"{model.base_model_prefix}."
    encoder = (f"{prefix}embeddings.", f"{prefix}encoder.")

    def in_head(key: str) -> bool:
        return not key.startswith(encoder)

    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda m: (in_head(m[0]), m[0]))
    bad = [m for m in mismatched if not (new_head_ok and in_head(m[0]))]
    if bad:
        key, saved, wanted = bad[0]
        if in_head(key) and key.startswith("classifier") and len(saved) and len(wanted):
            raise CheckpointError(
                f"{src}: the classifier head in {weights} has {saved[0]} output(s) but config.json says num_labels "
                f"{model.config.num_labels}: fix num_labels/id2label in config.json, or save the checkpoint again"
            )
        raise CheckpointError(
            f"{src}: {key} has shape {list(saved)} in {weights} but config.json implies {list(wanted)}: "
            "the weights and config.json do not belong together; save the checkpoint again"
        )
    missing = sorted(k for k in info.get("missing_keys") or [] if not (new_head_ok and in_head(k)))
    if missing:
        where = "the classification head" if all(in_head(k) for k in missing) else "the encoder"
        raise CheckpointError(
            f"{src}: {weights} lacks {len(missing)} tensor(s) of {where} that config.json describes (e.g. {missing[0]}): "
            "the weights and config.json do not belong together; save the checkpoint again"
        )


def load_span_model(path_or_name: str | os.PathLike, head: str = "trained", local: bool = True):
    """Load an extractive QA model (AutoModelForQuestionAnswering, eval mode); with head "new" any
    encoder checkpoint, its span head newly initialised (fine-tuning)."""
    return load_classifier(path_or_name, head, local=local, kinds=("span",))


def load_tokenizer(path_or_name: str | os.PathLike, local: bool = True):
    """AutoTokenizer of a checkpoint (hub names with `local=False`); a directory without tokenizer
    files, or files that fail to load, give one CheckpointError line."""
    from transformers import AutoTokenizer

    path = local_checkpoint(Path(path_or_name) if local else path_or_name)
    if path is not None:
        check_tokenizer_files(path)
    src = str(path) if path is not None else str(path_or_name)
    with _quiet_loading():
        try:
            return AutoTokenizer.from_pretrained(src)
        except Exception as e:
            # the tokenizers library raises a bare Exception for a corrupt tokenizer.json
            if not isinstance(e, (OSError, ValueError, RuntimeError, TypeError, KeyError)) and type(e) is not Exception:
                raise
            raise CheckpointError(f"the tokenizer of {src} cannot be loaded: {first_line(e)}; copy the tokenizer files again") from None


def wrap(model, config: PruneConfig | None, mode: str = "drop", **kwargs) -> PrunedEncoder:
    """Wrap a loaded HF sequence classifier or QA model into a PrunedEncoder (eval mode)."""
    adapter = spec_for(model.config).adapter(model)
    kind = head_kind([type(model).__name__]) or "sequence"
    return PrunedEncoder(adapter, config, mode, head=kind, **kwargs).eval()


def load_pruned(
    model_dir: str | os.PathLike, mode: str = "drop", require_config: bool = True, num_labels: int | None = None,
    kinds: tuple[str, ...] = ("sequence",),
) -> PrunedEncoder:
    """Load `model_dir` (HF checkpoint + tokprune.json) as a PrunedEncoder; `num_labels` gives a bare
    encoder a new head; `kinds`: the heads (artifact.HEAD_CLASSES) the caller runs."""
    hf = check_checkpoint(model_dir, "trained" if num_labels is None else "if_missing", tokenizer=False, kinds=kinds)
    config = None
    if require_config or (Path(model_dir) / CONFIG_NAME).is_file():
        fields = spec_for(hf).fields
        positions = fields.get(hf, "max_positions")
        positions = positions if type(positions) is int and positions > 0 else None
        config = PruneConfig.load(
            model_dir, num_hidden_layers=fields.get(hf, "layers"), max_positions=positions,
            type_vocab_size=hf.get("type_vocab_size", 1),
        )
    model = load_classifier(model_dir, "trained" if num_labels is None else "if_missing", num_labels=num_labels, kinds=kinds)
    return wrap(model, config, mode)


__all__ = [
    "CheckpointError", "MODES", "PrunedEncoder", "PrunedOutput", "check_checkpoint", "check_tokenizer_files",
    "head_kind", "kept_positions", "load_classifier", "load_pruned", "load_span_model", "load_tokenizer", "local_checkpoint",
    "read_model_type", "wrap",
]
