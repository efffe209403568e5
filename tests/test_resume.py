"""Resumable training (training.resume): a run interrupted right after a Trainer checkpoint and rerun
with the same command ends with the same weights, config and gate history as a run never
interrupted; a finished stage is not trained again; a different command refuses in one line."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers.trainer_callback import CallbackHandler

from conftest import assert_one_line_error, make_small_glue
from onnx_tokprune.cli import main
from onnx_tokprune.training import common as common_module
from onnx_tokprune.training.resume import state_dir


class Interrupted(Exception):
    """Stands for a kill right after a checkpoint was written."""


@pytest.fixture(scope="module")
def small_glue(tmp_path_factory):
    return make_small_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="module")
def finetuned(tiny_checkpoint, small_glue, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "ft"
    result = CliRunner().invoke(main, [str(a) for a in ["train", "finetune", "--model", tiny_checkpoint, "--output", out, "--epochs", 1, *common(small_glue)]])
    assert result.exit_code == 0, result.output
    return out


def common(glue, save_steps: int = 2):
    return ["--task", "sst2", "--data-dir", glue, "--batch-size", 8, "--max-length", 64, "--save-steps", save_steps]


def run(args, interrupt_at_save: int | None = None):
    """Invoke the CLI; with `interrupt_at_save`, raise Interrupted once that many checkpoints are
    written (after every callback saw the save, as a kill would find them)."""
    if interrupt_at_save is None:
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result
    original, saves = CallbackHandler.on_save, []

    def on_save(self, args, state, control):
        control = original(self, args, state, control)
        saves.append(state.global_step)
        if len(saves) == interrupt_at_save:
            raise Interrupted
        return control

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CallbackHandler, "on_save", on_save)
        result = CliRunner().invoke(main, [str(a) for a in args])
    assert isinstance(result.exception, Interrupted), result.output
    return result


def assert_same_checkpoint(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=key)
    ca, cb = (json.loads((d / "tokprune.json").read_text()) if (d / "tokprune.json").is_file() else None for d in (a, b))
    if ca is not None:
        assert ca["layers"] == cb["layers"]


def test_interrupted_finetune_resumes_to_the_same_weights(tiny_checkpoint, small_glue, tmp_path, monkeypatch):
    args = ["train", "finetune", "--model", tiny_checkpoint, "--epochs", 2, *common(small_glue)]
    run([*args, "--output", tmp_path / "straight"])
    assert not state_dir(tmp_path / "straight").exists()
    run([*args, "--output", tmp_path / "cut"], interrupt_at_save=2)
    assert not (tmp_path / "cut").exists()
    assert (state_dir(tmp_path / "cut") / "train" / "checkpoint-4").is_dir()
    result = run([*args, "--output", tmp_path / "cut"])
    assert "resuming from" in result.stderr and "checkpoint-4" in result.stderr
    assert not state_dir(tmp_path / "cut").exists()
    assert_same_checkpoint(tmp_path / "straight", tmp_path / "cut")
    straight, resumed = (json.loads((tmp_path / d / "training.json").read_text()) for d in ("straight", "cut"))
    assert straight["command"] == "finetune" and straight["settings"]["epochs"] == 2 and straight["model"]["path"] == str(tiny_checkpoint)
    assert not straight["resumed"] and resumed["resumed"]
    assert straight["dev_metrics"] == pytest.approx(resumed["dev_metrics"], abs=1e-6) and set(straight["dev_metrics"]) >= {"accuracy"}
    assert set(straight["versions"]) == {"onnx_tokprune", "torch", "transformers"} and straight["command_line"]


def test_ltp_resumes_in_either_stage_and_skips_a_finished_soft_stage(finetuned, small_glue, tmp_path, monkeypatch):
    args = ["train", "ltp", "--model", finetuned, "--lambda", 0.5, "--threshold-lr", 1e-3, "--soft-epochs", 1, "--hard-epochs", 1, *common(small_glue)]
    run([*args, "--output", tmp_path / "straight"])
    # 6 steps per stage, a checkpoint every 2: the 2nd save is in the soft stage, the 4th in the hard one
    run([*args, "--output", tmp_path / "soft"], interrupt_at_save=2)
    assert not (state_dir(tmp_path / "soft") / "soft" / "done").exists()
    run([*args, "--output", tmp_path / "soft"])
    run([*args, "--output", tmp_path / "hard"], interrupt_at_save=4)
    assert (state_dir(tmp_path / "hard") / "soft" / "done" / "tokprune.json").is_file()
    result = run([*args, "--output", tmp_path / "hard"])
    assert "hard/checkpoint-2" in result.stderr and "soft/checkpoint" not in result.stderr
    for resumed in ("soft", "hard"):
        assert_same_checkpoint(tmp_path / "straight", tmp_path / resumed)
        provenance = json.loads((tmp_path / resumed / "tokprune.json").read_text())["provenance"]
        straight = json.loads((tmp_path / "straight" / "tokprune.json").read_text())["provenance"]
        assert provenance["learned_thresholds"] == pytest.approx(straight["learned_thresholds"], abs=1e-7)
        assert json.loads((tmp_path / resumed / "training.json").read_text())["settings"]["lam"] == 0.5


@dataclass
class EveryStep(common_module.TrainSettings):
    logging_steps: int = 1


def test_top_resumes_its_gates_and_constraint_history(finetuned, small_glue, tmp_path, monkeypatch):
    monkeypatch.setattr(common_module, "TrainSettings", EveryStep)  # a constraint record per step
    args = ["train", "top", "--model", finetuned, "--target-flops", 0.4, "--bins", 5, "--reg-lr", 1.0, "--epochs", 3,
            "--warmup-epochs", 1, "--top-k", 5, "--rank-weight", 0.1, "--match-samples", 16, "--hard-epochs", 1, *common(small_glue)]
    run([*args, "--output", tmp_path / "straight"])
    run([*args, "--output", tmp_path / "cut"], interrupt_at_save=5)
    run([*args, "--output", tmp_path / "cut"])
    assert_same_checkpoint(tmp_path / "straight", tmp_path / "cut")
    gates = [json.loads((tmp_path / d / "top_gates.json").read_text()) for d in ("straight", "cut")]
    assert [h["step"] for h in gates[1]["history"]] == [h["step"] for h in gates[0]["history"]] == list(range(1, 19))
    for resumed, straight in zip(gates[1]["history"], gates[0]["history"]):
        assert resumed == pytest.approx(straight, abs=1e-5)
    for key in ("bin_log_alpha", "layer_log_alpha", "lagrange"):
        np.testing.assert_allclose(np.array(gates[1][key]), np.array(gates[0][key]), atol=1e-5, err_msg=key)
    manifest = json.loads((tmp_path / "cut" / "training.json").read_text())
    assert manifest["command"] == "top" and manifest["settings"]["target_flops"] == 0.4 and manifest["resumed"]


def test_a_different_command_refuses_to_resume_and_force_starts_over(tiny_checkpoint, small_glue, tmp_path, monkeypatch):
    args = ["train", "finetune", "--model", tiny_checkpoint, "--output", tmp_path / "ft", *common(small_glue)]
    run([*args, "--epochs", 2], interrupt_at_save=1)
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--epochs", 1]])
    assert_one_line_error(result, str(state_dir(tmp_path / "ft")), "differs in settings", "--force")
    assert not (tmp_path / "ft").exists()
    result = run([*args, "--epochs", 1, "--force"])
    assert "resuming" not in result.stderr and (tmp_path / "ft" / "config.json").is_file()
    assert not state_dir(tmp_path / "ft").exists()


def test_save_steps_zero_keeps_no_state(tiny_checkpoint, small_glue, tmp_path, monkeypatch):
    args = ["train", "finetune", "--model", tiny_checkpoint, "--output", tmp_path / "ft", "--epochs", 1, *common(small_glue, save_steps=0)]
    run(args)
    assert (tmp_path / "ft" / "config.json").is_file() and not state_dir(tmp_path / "ft").exists()
