"""Extractive question answering around a span head: windows over long contexts, best span, SQuAD metric.

Needs only `tokenizers` and numpy (the runtime's dependencies), so the artifact session, the PyTorch
evaluation and the training data share one windowing and one span rule:

- `QAWindows.encode`: (question, context) -> windows of at most `max_length` tokens; a context that
  does not fit is cut into overlapping windows (`stride` tokens shared by neighbours), the question
  is repeated in each, as Hugging Face's question-answering examples do (truncation "only_second");
- `best_span`: the highest start+end logit over every window, among spans inside the context of at
  most `max_answer_tokens` tokens (SQuAD v1.1: every question has an answer);
- `squad_scores`: exact match and F1 as the official SQuAD v1.1 evaluation script defines them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from onnx_tokprune.errors import InvalidTextError, TextTooLongError
from onnx_tokprune.runtime.text_encoder import check_text

DEFAULT_MAX_LENGTH = 384
DEFAULT_STRIDE = 128
QA_CONFIG_KEY = "tokprune_qa"
"""config.json key where QA fine-tuning records its window (`max_length`, `stride`); later steps
(calibration, evaluation, the artifact session) use the same window unless told otherwise."""
N_BEST = 20
MAX_ANSWER_TOKENS = 30


@dataclass(frozen=True)
class Window:
    """One model input of a (question, context) pair: token rows plus where its context tokens lie."""

    example: int
    """Index of the question it belongs to."""
    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int]]
    """Character span in the context of each token; (0, 0) outside the context."""
    in_context: list[bool]


def window_settings(config: dict, max_length: int | None = None, stride: int | None = None) -> tuple[int, int]:
    """(max_length, stride): the given values, else the model config's QA_CONFIG_KEY, else the defaults
    (max_length capped at the model's position limit)."""
    from onnx_tokprune.runtime.text_encoder import position_limit

    recorded = config.get(QA_CONFIG_KEY) if isinstance(config.get(QA_CONFIG_KEY), dict) else {}
    length = max_length or recorded.get("max_length") or min(DEFAULT_MAX_LENGTH, position_limit(config))
    return int(length), int(stride if stride is not None else recorded.get("stride", min(DEFAULT_STRIDE, length // 2)))


class QAWindows:
    """Tokenizes (question, context) pairs into windows with the model's own tokenizer.json."""

    def __init__(self, tokenizer: Tokenizer, max_length: int = DEFAULT_MAX_LENGTH, stride: int = DEFAULT_STRIDE) -> None:
        if not 0 <= stride < max_length:
            raise ValueError(f"stride must be in [0, max_length), got {stride} with max_length {max_length}")
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())  # own truncation settings
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length, stride=stride, strategy="only_second")
        self.max_length = max_length
        self.stride = stride

    def encode(self, questions: Sequence[str], contexts: Sequence[str]) -> list[Window]:
        """Every window of every pair, in order; InvalidTextError / TextTooLongError name the pair."""
        for i, (q, c) in enumerate(zip(questions, contexts, strict=True)):
            check_text(q, f"question {i}")
            check_text(c, f"context {i}")
            if not c.strip():
                raise InvalidTextError(f"context {i} is empty: pass the text the answer is to be found in")
        try:
            encodings = self.tokenizer.encode_batch([(q.lstrip(), c) for q, c in zip(questions, contexts)])
        except Exception as e:  # tokenizers raises a bare Exception when the question alone fills the window
            if "only_second" not in str(e) and "truncat" not in str(e).lower():
                raise
            long = max(range(len(questions)), key=lambda i: len(questions[i]))
            raise TextTooLongError(
                f"question {long} leaves no room for its context in {self.max_length} tokens: shorten the question or raise max_length"
            ) from None
        windows = []
        for i, encoding in enumerate(encodings):
            for part in [encoding, *encoding.overflowing]:
                sequence = part.sequence_ids
                windows.append(Window(
                    i, list(part.ids), list(part.type_ids),
                    [tuple(o) if s == 1 else (0, 0) for o, s in zip(part.offsets, sequence)],
                    [s == 1 for s in sequence],
                ))
        return windows

    @staticmethod
    def pad(windows: Sequence[Window]) -> dict[str, np.ndarray]:
        """Right-padded int64 input_ids, attention_mask, token_type_ids."""
        width = max(len(w.ids) for w in windows)
        feeds = {k: np.zeros((len(windows), width), dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        for r, w in enumerate(windows):
            feeds["input_ids"][r, : len(w.ids)] = w.ids
            feeds["attention_mask"][r, : len(w.ids)] = 1
            feeds["token_type_ids"][r, : len(w.ids)] = w.type_ids
        return feeds


def answer_token_span(window: Window, start_char: int, end_char: int) -> tuple[int, int]:
    """Training label of a window: the first and last token covering the answer's characters
    [start_char, end_char), or (0, 0) (CLS) when the window does not hold the whole answer."""
    tokens = [i for i, inside in enumerate(window.in_context) if inside]
    if not tokens or window.offsets[tokens[0]][0] > start_char or window.offsets[tokens[-1]][1] < end_char:
        return 0, 0
    start = next(i for i in tokens if window.offsets[i][1] > start_char)
    end = next(i for i in reversed(tokens) if window.offsets[i][0] < end_char)
    return start, end


@dataclass(frozen=True)
class Span:
    text: str
    score: float
    start_char: int
    end_char: int


def best_span(
    windows: Sequence[Window], start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
    context: str, n_best: int = N_BEST, max_answer_tokens: int = MAX_ANSWER_TOKENS,
) -> Span:
    """The best answer of one question from its windows' logits (each [len(window.ids)])."""
    best = Span("", float("-inf"), 0, 0)
    for window, start, end in zip(windows, start_logits, end_logits):
        length = len(window.ids)
        start, end = np.asarray(start)[:length], np.asarray(end)[:length]
        for s in np.argsort(-start, kind="stable")[:n_best]:
            if not window.in_context[s]:
                continue
            for e in np.argsort(-end, kind="stable")[:n_best]:
                if not window.in_context[e] or e < s or e - s + 1 > max_answer_tokens:
                    continue
                score = float(start[s] + end[e])
                if score > best.score:
                    a, b = window.offsets[s][0], window.offsets[e][1]
                    best = Span(context[a:b], score, a, b)
    return best


def spans(
    windows: Sequence[Window], start_logits: np.ndarray | Sequence[np.ndarray], end_logits: np.ndarray | Sequence[np.ndarray],
    contexts: Sequence[str],
) -> list[Span]:
    """The best span per question, from the logits of every window (rows in `windows` order)."""
    grouped: dict[int, list[int]] = {}
    for row, window in enumerate(windows):
        grouped.setdefault(window.example, []).append(row)
    return [
        best_span([windows[r] for r in rows], [start_logits[r] for r in rows], [end_logits[r] for r in rows], contexts[i])
        for i, rows in sorted(grouped.items())
    ]


def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def f1_score(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], answers: Iterable[Sequence[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent, each the best over a question's reference answers (official v1.1)."""
    em = f1 = 0.0
    count = 0
    for prediction, truths in zip(predictions, answers, strict=True):
        em += max(float(normalize_answer(prediction) == normalize_answer(t)) for t in truths)
        f1 += max(f1_score(prediction, t) for t in truths)
        count += 1
    if count == 0:
        raise ValueError("no questions to score")
    return {"exact_match": 100 * em / count, "f1": 100 * f1 / count}
