"""ToP (Li et al., KDD'23): ranking distillation + L0 gates over rank bins and layers + a FLOPs constraint.

One training stage from a fine-tuned checkpoint, which is also the frozen teacher:
- Gates and constraint (`training.constraint`): per pruning layer B hard-concrete rank-bin gates and
  one layer gate; a token's keep value is its rank bin's gate (ranks by the layer's importance score,
  kept rows only, docs/design.md §2; decisions.ToPGateMask), the layer gate binarised straight-through
  (ToP's rule); the Lagrangian on the expected relative FLOPs, its target ramping in over
  `warmup_epochs`.
- Loss: logit distillation from the teacher (KL at temperature 2; MSE on labels for regression; for a
  span (QA) model the KL of the start and of the end distributions over positions, removed tokens
  restored in expectation: modeling.encoder),
  plus ranking distillation of the teacher's final-layer scores into the `rank_layers`
  (`training.ranking`) weighted by `rank_weight * max(0.01, 1 - warm-up progress)`, plus the Lagrangian.

At the end the gates binarise deterministically (ToP's rule). Our addition: the binarised gates'
relative FLOPs is measured on `match_samples` training inputs and, one bin at a time in log-alpha
order, moved as close to the target as single bins allow (the Lagrangian only holds the *expected*
FLOPs near the target, and rounding each layer's bins can land a few points off). Layers whose layer
gate is 0 (or whose bins are all open) are left out of tokprune.json, so the exporter emits no
TokenPrune node for them. An optional
hard stage fine-tunes the weights with the gates fixed (mask mode, same distillation). The gate
state (log-alphas, multipliers, constraint history) is written beside the checkpoint as
`top_gates.json` (constraint.GateState).
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from onnx_tokprune.config import PROTECTS, LayerRule, PruneConfig
from onnx_tokprune.flops import EncoderShape, relative_flops
from onnx_tokprune.io import write_json_atomic
from onnx_tokprune.modeling import wrap
from onnx_tokprune.training.common import TrainingError, TrainSettings, check_protect_data, load_task, run_trainer, save_checkpoint
from onnx_tokprune.training.constraint import GATES_FILE, FlopsConstraint, GateState, ToPGates, match_target_flops
from onnx_tokprune.training.distill import DistilledObjective, FrozenTeacher, distillation_loss, targets
from onnx_tokprune.training.ranking import rank_distillation_loss
from onnx_tokprune.training.resume import DEFAULT_SAVE_STEPS, MANIFEST, describe_file, open_run

TOP_RULE = {"rule": "rank_bins", "method": "top", "score_normalizer": "length"}
"""The PruneConfig fields every ToP checkpoint shares (bin masks per layer added)."""


def top_fields(protect: str | None) -> dict:
    """TOP_RULE plus a checkpoint's PruneConfig.protect."""
    return {**TOP_RULE, "protect": protect}


@dataclass
class ToPSettings:
    """ToP's knobs (defaults: the reference code's values where they carry over)."""

    target_flops: float = 0.5
    bins: int = 25
    layers: tuple[int, ...] | None = None
    """Candidate pruning layers (ours: the layer whose attention decides); default all but the
    first and last (ToP's locations 2..L-1)."""
    rank_layers: tuple[int, ...] | None = None
    """Layers whose scores learn the teacher's ranking; default the candidates in the first half."""
    top_k: int = 20
    rank_weight: float = 1e-3
    sigma: float = 1.0
    distill_temperature: float = 2.0
    ce_weight: float = 0.0
    reg_lr: float = 0.02
    warmup_epochs: float = 1.0
    match_samples: int = 1024
    """Training inputs on which the binarised gates' relative FLOPs is measured and matched to the
    target (0 = keep ToP's binarisation as is)."""
    protect: str | None = None
    """PruneConfig.protect of every stage and of the result ("second_text": a pair's second text ranks
    above every other token at each layer, so it fills the open bins first)."""
    train: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=3.0, learning_rate=2e-5))
    hard: TrainSettings | None = None

    def method(self) -> dict:
        """The PruneConfig fields of every config this run builds."""
        return top_fields(self.protect)

    def check(self, num_layers: int) -> None:
        if not 0 < self.target_flops < 1:
            raise TrainingError(f"target FLOPs must be in (0, 1), got {self.target_flops}")
        if not 2 <= self.bins <= 1024:
            raise TrainingError(f"bins must be in [2, 1024], got {self.bins}")
        if self.top_k < 2:
            raise TrainingError(f"top-k must be at least 2, got {self.top_k}")
        if self.reg_lr <= 0 or self.rank_weight < 0 or self.ce_weight < 0 or self.distill_temperature <= 0:
            raise TrainingError("reg lr and distillation temperature must be positive, weights non-negative")
        if self.match_samples < 0:
            raise TrainingError(f"match samples must be >= 0, got {self.match_samples}")
        if self.protect is not None and self.protect not in PROTECTS:
            raise TrainingError(f"protect must be one of {', '.join(PROTECTS)}, got {self.protect!r}")
        if not 0 < self.warmup_epochs <= self.train.epochs:
            raise TrainingError(f"warm-up epochs must be in (0, epochs={self.train.epochs}], got {self.warmup_epochs}")
        layers = self.pruning_layers(num_layers)
        if not layers or any(not 0 <= layer < num_layers for layer in layers):
            raise TrainingError(f"pruning layers {list(layers)} must be non-empty and within 0..{num_layers - 1}")
        bad = [layer for layer in self.distilled_layers(num_layers) if layer not in layers]
        if bad:
            raise TrainingError(f"rank layers {bad} are not pruning layers {list(layers)}")
        self.train.check()

    def pruning_layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(sorted(set(self.layers))) if self.layers else tuple(range(1, num_layers - 1))

    def distilled_layers(self, num_layers: int) -> tuple[int, ...]:
        if self.rank_layers is not None:
            return tuple(sorted(set(self.rank_layers)))
        return tuple(layer for layer in self.pruning_layers(num_layers) if layer < num_layers / 2)


def measured_relative_flops(model, config: PruneConfig | None, rows: list[dict], tokenizer, shape: EncoderShape, batch_size: int = 64) -> float:
    """Relative FLOPs of `config` on encoded inputs (dicts of input_ids / attention_mask /
    token_type_ids lists), run in mask mode (what the artifact removes). Batched by length: each row's
    kept counts do not depend on its batch, and random batches of long-tailed inputs pad 2-3x."""
    from transformers import DataCollatorWithPadding

    if config is None:
        return 1.0
    encoder = wrap(model, config, "mask")
    collate = DataCollatorWithPadding(tokenizer)
    device = next(model.parameters()).device
    lengths: list[int] = []
    kept: list[dict[int, float]] = []
    rows = sorted(rows, key=lambda row: len(row["input_ids"]))
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            out = encoder(**batch)
            lengths += batch["attention_mask"].sum(1).tolist()
            counts = [m.sum(1).tolist() for m in out.kept]
            kept += [{layer: float(c[row]) for layer, c in zip(encoder.pruning_layers, counts)} for row in range(len(chunk))]
    return relative_flops(shape, lengths, kept)


def rematch_checkpoint(
    model_dir: str | os.PathLike, examples, output: str | os.PathLike, target: float | None = None, force: bool = False
) -> tuple[PruneConfig, dict]:
    """Re-binarise a ToP checkpoint's gates (log-alphas from its provenance) and match them to
    `target` (default: the training target) on `examples` (TextExample inputs of the deployment
    distribution; labels are not read). Writes a new checkpoint dir at `output`."""
    from onnx_tokprune.modeling import load_classifier, load_tokenizer

    config = PruneConfig.load(model_dir)
    if config.method != "top":
        raise TrainingError(f"{model_dir} is not a checkpoint of tokprune-train top (its method is {config.method!r})")
    state = GateState.load(model_dir, config.provenance)
    target = float(state.target_flops if target is None else target)
    if not 0 < target < 1:
        raise TrainingError(f"target FLOPs must be in (0, 1), got {target}")
    tokenizer = load_tokenizer(model_dir)
    model = load_classifier(model_dir)
    shape = EncoderShape.from_hf(model.config)
    gates = ToPGates.from_state(state, shape)
    limit = model.config.max_position_embeddings
    rows = []
    for ex in examples:
        enc = tokenizer(ex.text, ex.text_pair, truncation=True, max_length=limit, return_token_type_ids=True)
        rows.append({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    method = top_fields(config.protect)

    def measure(cfg):
        return measured_relative_flops(model, cfg, rows, tokenizer, shape)

    before = measure(PruneConfig(layers=gates.binarized_rules(), **method))
    rules, after, changed = match_target_flops(gates, measure, target, method)
    if not rules:
        raise TrainingError("no layer prunes after matching: raise the target")
    matched = {"samples": len(rows), "data": "user inputs", "target_flops": target, "binarized_flops": round(before, 4),
               "matched_flops": round(after, 4), "bins_changed": changed}
    provenance = {**config.provenance, "flops_matching": matched, "rematched_from": str(model_dir)}
    new = PruneConfig(layers=rules, provenance=provenance, **method)
    save_checkpoint(model, tokenizer, output, new, force, {GATES_FILE: state.to_json()})
    return new, matched


class ToPObjective(FrozenTeacher):
    """The ToP training loss around a gate-mode student (see the module docstring)."""

    def __init__(self, student, teacher, gates: ToPGates, settings: ToPSettings, warmup_steps: int) -> None:
        super().__init__(teacher)
        self.student = student
        self.gates = gates
        self.settings = settings
        self.constraint = FlopsConstraint(settings.target_flops, warmup_steps)
        self.step = 0
        self.teacher_layer = teacher.num_layers - 1
        self.rank_layers = settings.distilled_layers(student.num_layers)
        self.last: dict[str, float] = {}

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, start_positions=None, end_positions=None):
        out = self.student(input_ids, attention_mask, token_type_ids, gates=self.gates())
        result = {"logits": out.logits}
        labels = targets(labels, start_positions, end_positions)
        if labels is None:
            return result
        with torch.no_grad():
            teacher = self.teacher(input_ids, attention_mask, token_type_ids)
        s = self.settings
        loss = distillation_loss(out.logits, teacher.logits, labels, s.distill_temperature, s.ce_weight)
        target = teacher.scores[self.teacher_layer]
        rank = sum(rank_distillation_loss(out.scores[l], target, attention_mask, s.top_k, s.sigma) for l in self.rank_layers)
        loss = loss + s.rank_weight * max(0.01, 1.0 - self.constraint.progress(self.step)) * rank
        penalty, record = self.constraint(self.gates.expected_relative_flops(attention_mask.sum(dim=1)), self.step)
        self.last = {**record, "rank_loss": float(rank.detach()) if torch.is_tensor(rank) else float(rank)}
        result["loss"] = loss + penalty
        return result


HISTORY_FILE = "top_history.json"
"""The constraint history up to a Trainer checkpoint, written into it (a resumed run continues it)."""


def _callback(objective: ToPObjective, history: list[dict]):
    from transformers import TrainerCallback

    class ToPCallback(TrainerCallback):
        """Feeds the step to the target ramp, clamps log-alphas after each step, records the
        constraint, and keeps the record with each Trainer checkpoint."""

        def on_step_begin(self, args, state, control, **kwargs):
            objective.step = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            objective.gates.constrain()
            last = state.global_step == state.max_steps
            if (last or state.global_step % max(1, args.logging_steps) == 0) and objective.last:
                history.append({"step": state.global_step, **objective.last})

        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and checkpoint.is_dir():
                write_json_atomic(checkpoint / HISTORY_FILE, history)

    return ToPCallback()


def train_top(
    model_dir: str,
    data,
    output: str | os.PathLike,
    settings: ToPSettings,
    max_train_samples: int | None = None,
    max_length: int = 128,
    force: bool = False,
    save_steps: int = DEFAULT_SAVE_STEPS,
) -> tuple[PruneConfig, dict[str, float]]:
    """Train ToP from a fine-tuned checkpoint (student start and teacher); save; return (config, dev metrics).
    `data`: a TrainingInput (sequence classifier) or a training.qa.QAData (span model: span distillation).
    Resumable (training.resume): each stage checkpoints every `save_steps` steps to `output`.resume,
    and a finished gate stage is kept there, so rerunning the same call continues where it stopped."""
    spec = {"command": "top", "model": describe_file(model_dir), "data": data.describe(), "settings": asdict(settings),
            "max_train_samples": max_train_samples, "max_length": max_length}
    run = open_run(output, spec, save_steps, force)
    tokenizer, model, task = load_task(model_dir, data, max_train_samples, max_length, settings.train.seed)
    num_layers = model.config.num_hidden_layers
    settings.check(num_layers)
    check_protect_data(settings.protect, model, task, settings.train.seed)
    teacher = wrap(copy.deepcopy(model), None, "mask", observe_layers=(num_layers - 1,))
    for p in model.base_model.embeddings.parameters():
        p.requires_grad_(False)
    gate_stage = run.stage("gates")
    if gate_stage is not None and gate_stage.is_done():
        config = PruneConfig.load(gate_stage.done)
        state = GateState.load(gate_stage.done, config.provenance)
        model.load_state_dict(type(model).from_pretrained(gate_stage.done).state_dict())
        trainer = None
    else:
        config, state, trainer = _gate_stage(model, tokenizer, task, teacher, settings, model_dir, max_train_samples, gate_stage)
    if settings.hard is not None:
        hard = wrap(model, config, "mask")
        trainer = run_trainer(DistilledObjective(hard, teacher, settings.distill_temperature, settings.ce_weight), task.train, tokenizer, settings.hard, stage=run.stage("hard"))
    metrics = task.evaluate(wrap(model, config, "drop"))
    config.provenance["dev_metrics_drop"] = metrics
    for p in model.parameters():
        p.requires_grad_(True)
    if trainer is None or trainer.is_world_process_zero():
        save_checkpoint(model, tokenizer, output, config, force, {GATES_FILE: state.to_json(), MANIFEST: run.manifest(metrics)})
        run.finish()
    return config, metrics


def _gate_stage(model, tokenizer, task, teacher, settings: ToPSettings, model_dir: str, max_train_samples: int | None, stage):
    """Gates, ranking distillation and the FLOPs constraint, then binarisation matched to the target:
    (config with provenance, GateState, trainer); with a resume `stage`, the result is also handed
    over in stage.done."""
    train = task.train
    num_layers = model.config.num_hidden_layers
    layers = settings.pruning_layers(num_layers)
    shape = EncoderShape.from_hf(model.config)
    candidates = PruneConfig(layers=tuple(LayerRule(layer, bin_mask=(1,) * settings.bins) for layer in layers), **settings.method())
    student = wrap(model, candidates, "gate", observe_layers=settings.distilled_layers(num_layers))
    gates = ToPGates(layers, settings.bins, shape)
    steps_per_epoch = math.ceil(len(train) / settings.train.batch_size)
    objective = ToPObjective(student, teacher, gates, settings, round(settings.warmup_epochs * steps_per_epoch))
    resumed = stage.latest_checkpoint() if stage is not None else None
    history: list[dict] = []
    if resumed is not None and (Path(resumed) / HISTORY_FILE).is_file():
        history = json.loads((Path(resumed) / HISTORY_FILE).read_text())
    groups = [
        {"params": list(gates.parameters()), "lr": settings.reg_lr, "weight_decay": 0.0},
        {"params": [objective.constraint.lagrange], "lr": settings.reg_lr, "weight_decay": 0.0},
    ]
    trainer = run_trainer(
        objective, train, tokenizer, settings.train, groups, constant_extra_lr=True, callbacks=(_callback(objective, history),),
        stage=stage,
    )
    gates.eval()
    method = settings.method()
    rules, matched = gates.binarized_rules(), {}
    if settings.match_samples and rules:
        sample = train.shuffle(seed=settings.train.seed).select(range(min(settings.match_samples, len(train))))
        columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in sample.column_names]
        rows = [{c: sample[i][c] for c in columns} for i in range(len(sample))]

        def measure(config):
            return measured_relative_flops(model, config, rows, tokenizer, shape)

        before = measure(PruneConfig(layers=rules, **method))
        rules, after, changed = match_target_flops(gates, measure, settings.target_flops, method)
        matched = {"samples": len(sample), "binarized_flops": round(before, 4), "matched_flops": round(after, 4), "bins_changed": changed}
    if not rules:
        raise TrainingError("no layer prunes after training (every layer gate closed): train longer or lower --target-flops")
    state = gates.state(settings.target_flops, objective.constraint.lagrange, history)
    provenance = {
        "tool": "tokprune-train top",
        "task": task.describe(),
        "base": str(model_dir),
        "target_flops": settings.target_flops,
        "bins": settings.bins,
        "candidate_layers": list(layers),
        "rank_layers": list(settings.distilled_layers(num_layers)),
        "top_k": settings.top_k,
        "rank_weight": settings.rank_weight,
        "reg_lr": settings.reg_lr,
        "warmup_epochs": settings.warmup_epochs,
        "epochs": settings.train.epochs,
        "hard_epochs": settings.hard.epochs if settings.hard else 0,
        "max_train_samples": max_train_samples,
        "flops_matching": matched,
        "gate_state": GATES_FILE,
    }
    config = PruneConfig(layers=rules, provenance=provenance, **method)
    if stage is not None and trainer.is_world_process_zero():
        save_checkpoint(model, tokenizer, stage.done, config, extra_files={GATES_FILE: state.to_json()})
    return config, state, trainer
