"""--group-by-length: training batches of similar length (less padding), every input still seen once
per epoch, recorded in the run's training.json; LTP and ToP pass it to both their stages."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner

from conftest import make_small_glue
from onnx_tokprune.cli import main
from onnx_tokprune.training.common import ClassifierObjective

FORWARD = ClassifierObjective.forward


@pytest.fixture(scope="module")
def small_glue(tmp_path_factory):
    # enough rows that the Trainer's sampler sorts more than one batch at a time (its megabatch is
    # batch size x min(rows // (4 x batch size), 50))
    return make_small_glue(tmp_path_factory.mktemp("glue"), rows=320)


def common(glue):
    return ["--task", "sst2", "--data-dir", glue, "--batch-size", 8, "--max-length", 64, "--save-steps", 0]


def finetune_batches(checkpoint, glue, output, monkeypatch, *flags):
    """Run one fine-tuning epoch; the (padded length, real lengths) of every training batch."""
    seen = []

    def recording(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        if self.training:
            seen.append((input_ids.shape[1], attention_mask.sum(1).tolist()))
        return FORWARD(self, input_ids, attention_mask, token_type_ids, labels)

    monkeypatch.setattr(ClassifierObjective, "forward", recording)
    args = ["train", "finetune", "--model", checkpoint, "--epochs", 1, "--output", output, *common(glue), *flags]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return seen


def test_grouped_batches_pad_less_and_see_every_input_once(tiny_checkpoint, small_glue, tmp_path, monkeypatch):
    plain = finetune_batches(tiny_checkpoint, small_glue, tmp_path / "plain", monkeypatch)
    grouped = finetune_batches(tiny_checkpoint, small_glue, tmp_path / "grouped", monkeypatch, "--group-by-length")
    assert Counter(n for _, lengths in plain for n in lengths) == Counter(n for _, lengths in grouped for n in lengths)
    padded = {name: sum(width * len(lengths) for width, lengths in batches) for name, batches in (("plain", plain), ("grouped", grouped))}
    assert padded["grouped"] < padded["plain"]
    spread = [max(lengths) - min(lengths) for _, lengths in grouped]
    assert max(spread) < max(max(lengths) - min(lengths) for _, lengths in plain)
    settings = {d: json.loads((tmp_path / d / "training.json").read_text())["settings"] for d in ("plain", "grouped")}
    assert settings["grouped"]["group_by_length"] is True and settings["plain"]["group_by_length"] is False


@pytest.mark.parametrize("method, stage_options", [
    ("ltp", ["--soft-epochs", 0.5, "--hard-epochs", 0.5, "--max-train-samples", 64]),
    ("top", ["--target-flops", 0.4, "--bins", 5, "--reg-lr", 1.0, "--epochs", 3, "--warmup-epochs", 1, "--top-k", 5,
             "--rank-weight", 0.1, "--match-samples", 16, "--hard-epochs", 0.5, "--max-train-samples", 64]),
])
def test_pruning_methods_group_both_stages(method, stage_options, tiny_checkpoint, small_glue, tmp_path):
    args = ["train", method, "--model", tiny_checkpoint, "--output", tmp_path / method, *common(small_glue), *stage_options, "--group-by-length"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / method / "training.json").read_text())["settings"]
    stages = ("soft", "hard") if method == "ltp" else ("train", "hard")
    assert [settings[s]["group_by_length"] for s in stages] == [True, True]


def test_the_sampling_argument_follows_the_installed_transformers_major():
    from transformers import TrainingArguments

    from onnx_tokprune.training.common import _sampling

    class Transformers4:
        def __init__(self, output_dir: str, group_by_length: bool = False) -> None: ...

    assert _sampling(Transformers4, True) == {"group_by_length": True}
    args = TrainingArguments(output_dir="unused", **_sampling(TrainingArguments, True), report_to="none")
    assert getattr(args, "train_sampling_strategy", None) == "group_by_length" or args.group_by_length is True
