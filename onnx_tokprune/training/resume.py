"""Resumable training: a `tokprune-train` run that was interrupted picks up where it stopped.

A run writing OUTPUT keeps its state in the sibling directory `OUTPUT.resume/` while it trains:
- `run.json`: what the run is (command, base checkpoint, data, every setting). Rerunning the same
  command resumes; a rerun with anything different refuses in one line (rerun as before, or pass
  `--force` to start over); a state with no checkpoint yet is simply replaced;
- `<stage>/checkpoint-N/`: the HF Trainer's checkpoints of one training stage (the weights of all
  that trains, optimizer, learning-rate schedule, RNG states, step, position in the data), every
  `save_steps` optimizer steps; only the last is kept. `Trainer.train(resume_from_checkpoint=...)`
  restores it and skips the batches already seen, so a resumed run continues the same run;
- `<stage>/done/`: what a finished stage hands to the next (LTP's soft stage: weights and learned
  thresholds; ToP's gate stage: weights, gates and constraint history), so a rerun does not repeat it.
When OUTPUT is written, `OUTPUT.resume/` is removed, and OUTPUT gets `training.json` (RunState.manifest:
the same description of the run, the command line, its dev metrics, library versions), so every
checkpoint says what produced it. `save_steps=0` keeps no state (nothing resumes).
Hand-written because the Trainer resumes one stage; the multi-stage bookkeeping and the refusal to
resume a different run are ours.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnx_tokprune.errors import TrainingError
from onnx_tokprune.io import write_json_atomic

DEFAULT_SAVE_STEPS = 50
"""Optimizer steps between checkpoints of a training stage (the CLI's --save-steps default)."""
RUN_FILE = "run.json"
MANIFEST = "training.json"
"""In every checkpoint tokprune-train writes: what produced it (RunState.manifest)."""
SUFFIX = ".resume"
DONE = "done"


def state_dir(output: str | os.PathLike) -> Path:
    """Where a run writing `output` keeps its training state."""
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


@dataclass(frozen=True)
class Stage:
    """One training stage's checkpoints (`directory`/checkpoint-N) and its hand-over (`directory`/done)."""

    directory: Path
    save_steps: int

    def latest_checkpoint(self) -> str | None:
        """The checkpoint with the highest step that the Trainer finished writing, or None."""
        if not self.directory.is_dir():
            return None
        steps = [
            (int(m.group(1)), p) for p in self.directory.iterdir()
            if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").is_file()
        ]
        return str(max(steps)[1]) if steps else None

    @property
    def done(self) -> Path:
        return self.directory / DONE

    def is_done(self) -> bool:
        return (self.done / "config.json").is_file()


def describe_file(path: str | os.PathLike | None) -> Any:
    """A data or checkpoint path with its files' sizes and modification times (a changed file is a
    different run); a name that is no local path (a hub name) as it is."""
    if path is None or not Path(path).exists():
        return None if path is None else str(path)
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    return {"path": str(path), "files": {str(p.relative_to(path) if path.is_dir() else p.name): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}


class RunState:
    """The training state of one run (module docstring); `None` root: the run keeps none."""

    def __init__(self, root: Path | None, save_steps: int, resumed: bool, spec: dict[str, Any]) -> None:
        self.root, self.save_steps, self.resumed, self.spec = root, save_steps, resumed, spec

    def manifest(self, metrics: dict[str, float]) -> dict[str, Any]:
        """The output's training.json: the run's spec, the command line that ran it, the dev metrics
        it reported, whether it resumed, the versions of the libraries that trained it, and when."""
        import datetime
        import shlex
        import sys

        import torch
        import transformers

        from onnx_tokprune import __version__

        return {
            **self.spec, "command_line": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]), "dev_metrics": metrics,
            "resumed": self.resumed, "versions": {"onnx_tokprune": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }

    def stage(self, name: str) -> Stage | None:
        return None if self.root is None else Stage(self.root / name, self.save_steps)

    def finish(self) -> None:
        """The output is written: the state is no longer needed."""
        if self.root is not None and self.root.is_dir():
            shutil.rmtree(self.root)


def open_run(output: str | os.PathLike, spec: dict[str, Any], save_steps: int, force: bool) -> RunState:
    """The state of the run writing `output` described by `spec` (JSON-able): resumed when
    `output`.resume holds the same spec, started otherwise (a different spec refuses unless `force`).
    Under torchrun only rank 0 writes."""
    main_process = int(os.environ.get("RANK", "0")) == 0
    if save_steps < 0:
        raise TrainingError(f"--save-steps must be >= 0, got {save_steps}")
    root = state_dir(output)
    spec = json.loads(json.dumps(spec, default=str))
    if root.exists() and not _has_progress(root) and main_process:
        shutil.rmtree(root)  # a run that stopped before its first checkpoint: nothing to resume
    if root.exists():
        previous = _read_spec(root)
        saved_steps = (previous or {}).pop("save_steps", 0)
        if previous == spec:
            return RunState(root, save_steps or saved_steps, resumed=True, spec=spec)
        if not force:
            changed = sorted(k for k in set(spec) | set(previous or {}) if (previous or {}).get(k) != spec.get(k))
            what = f"differs in {', '.join(changed)}" if previous is not None else "has no readable run.json"
            raise TrainingError(
                f"{root} holds an interrupted run that {what}: rerun with the same settings to resume it, or pass --force to start over"
            )
        if main_process:
            shutil.rmtree(root)
    if save_steps == 0:
        return RunState(None, 0, resumed=False, spec=spec)
    if main_process:
        root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(root / RUN_FILE, {**spec, "save_steps": save_steps})
    return RunState(root, save_steps, resumed=False, spec=spec)


def _has_progress(root: Path) -> bool:
    return any(root.glob("*/checkpoint-*/trainer_state.json")) or any(root.glob(f"*/{DONE}/config.json"))


def _read_spec(root: Path) -> dict | None:
    try:
        spec = json.loads((root / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return spec if isinstance(spec, dict) else None
