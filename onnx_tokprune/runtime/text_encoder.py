"""Text -> model inputs with the artifact's own tokenizer.json (needs `tokenizers` and numpy only)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from onnx_tokprune.data.text import TextExample
from onnx_tokprune.errors import CheckpointError, InvalidTextError, MissingFileError, TextTooLongError


def check_text(text: str, what: str) -> None:
    """InvalidTextError unless `text` is a str encodable as UTF-8 (a lone surrogate is not)."""
    if not isinstance(text, str):
        raise InvalidTextError(f"{what} must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidTextError(
            f"{what} is not valid Unicode text (character {text[e.start]!r} at position {e.start}, e.g. undecodable bytes): pass UTF-8 text"
        ) from None


def position_limit(config: dict) -> int:
    """The most tokens a model takes, from its config.json through its architecture's field names
    (512 when the config does not say, or names an architecture this version does not know)."""
    from onnx_tokprune.architectures import spec_for

    try:
        value = spec_for(config).fields.get(config, "max_positions", 512)
    except CheckpointError:  # onnxruntime can still run the graph
        value = 512
    return value if type(value) is int and value > 0 else 512


class TextEncoder:
    """Encodes texts (or pairs) without truncation; batches are padded to their longest row."""

    def __init__(self, tokenizer: Tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_length = max_length

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> TextEncoder:
        directory = Path(directory)
        tok_file = directory / "tokenizer.json"
        if not tok_file.is_file():
            raise MissingFileError(f"{directory} has no tokenizer.json: copy the checkpoint's fast tokenizer there")
        config = json.loads((directory / "config.json").read_text())
        return cls(Tokenizer.from_file(str(tok_file)), position_limit(config))

    def token_ids(self, examples: Sequence[TextExample], max_tokens: int | None = None) -> list[tuple[list[int], list[int]]]:
        """(input_ids, token_type_ids) per example; TextTooLongError names the first overlong one,
        InvalidTextError the first one that is not text. `max_tokens`: cut every example to that many
        tokens, special tokens included (the tokenizer's longest-first truncation: a pair loses tokens
        from its longer text first), as a model fine-tuned with that max_length reads it."""
        inputs = [(e.text, e.text_pair) if e.text_pair is not None else e.text for e in examples]
        try:
            if max_tokens is not None:
                self.tokenizer.enable_truncation(max_tokens, strategy="longest_first")
            encs = self.tokenizer.encode_batch(inputs)
        except TypeError:
            for i, e in enumerate(examples):
                check_text(e.text, f"example {i}")
                if e.text_pair is not None:
                    check_text(e.text_pair, f"example {i} (second text)")
            raise
        except Exception as e:  # the tokenizers library raises a bare Exception when max_tokens is too small
            if max_tokens is None or type(e) is not Exception:
                raise
            raise InvalidTextError(f"cannot cut the texts to {max_tokens} tokens ({e}): give a larger number of tokens") from None
        finally:
            self.tokenizer.no_truncation()
        out = []
        for i, enc in enumerate(encs):
            if len(enc.ids) > self.max_length:
                raise TextTooLongError(
                    f"example {i} has {len(enc.ids)} tokens, more than the model's maximum of {self.max_length}: shorten it"
                )
            out.append((enc.ids, enc.type_ids))
        return out

    def sequence_ids(self, example: TextExample) -> list[int | None]:
        """Per token of `example` (encoded as token_ids does, untruncated): 0 for the first text, 1 for
        the second, None for a token the tokenizer added ([CLS], [SEP], <s>, ...). Unlike token_type_ids
        this tells the texts apart for every architecture (RoBERTa gives both type 0)."""
        inputs = (example.text, example.text_pair) if example.text_pair is not None else (example.text,)
        return list(self.tokenizer.encode(*inputs).sequence_ids)

    @staticmethod
    def pad(rows: Sequence[tuple[list[int], list[int]]]) -> dict[str, np.ndarray]:
        """Right-pad token rows into int64 arrays input_ids, attention_mask, token_type_ids."""
        width = max(len(ids) for ids, _ in rows)
        feeds = {k: np.zeros((len(rows), width), dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        for r, (ids, types) in enumerate(rows):
            feeds["input_ids"][r, : len(ids)] = ids
            feeds["attention_mask"][r, : len(ids)] = 1
            feeds["token_type_ids"][r, : len(ids)] = types
        return feeds

    def __call__(self, examples: Sequence[TextExample]) -> dict[str, np.ndarray]:
        return self.pad(self.token_ids(examples))
