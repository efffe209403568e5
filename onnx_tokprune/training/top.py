"""ToP (Li et al., KDD'23): ranking distillation + L0 gates over rank bins and layers + a FLOPs constraint.

One training stage from a fine-tuned checkpoint, which is also the frozen teacher:
- Gates: per pruning layer B hard-concrete rank-bin gates and one layer gate (`training.l0`). A
  token's keep value is its rank bin's gate (ranks by the layer's importance score, kept rows only,
  DESIGN.md §2); the layer gate is binarised straight-through (ToP's rule).
- Constraint: expected relative FLOPs from the expected kept fraction per layer, cumulated over the
  layers with CLS always kept, in the same analytic FLOPs model as `onnx_tokprune.flops`; the
  Lagrangian `l1 (s - t) + l2 (s - t)^2` on sparsity s = 1 - FLOPs, l1 and l2 trained by gradient
  ascent, the target t ramping linearly from 0 to 1 - target_flops over `warmup_epochs`.
- Loss: logit distillation from the teacher (KL at temperature 2; MSE on labels for regression),
  plus ranking distillation of the teacher's final-layer scores into the `rank_layers`
  (`training.ranking`) weighted by `rank_weight * max(0.01, 1 - warm-up progress)`, plus the Lagrangian.

At the end the gates binarise deterministically (ToP's rule). Our addition: the binarised gates'
relative FLOPs is measured on `match_samples` training inputs and, one bin at a time in log-alpha
order, moved as close to the target as single bins allow (the Lagrangian only holds the *expected*
FLOPs near the target, and rounding each layer's bins can land a few points off). Layers whose layer
gate is 0 (or whose bins are all open) are left out of tokprune.json, so the exporter emits no
TokenPrune node for them. An optional
hard stage fine-tunes the weights with the gates fixed (mask mode, same distillation).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from onnx_tokprune.config import LayerRule, PruneConfig
from onnx_tokprune.data.metrics import compute_metrics
from onnx_tokprune.flops import EncoderShape, relative_flops
from onnx_tokprune.modeling import wrap
from onnx_tokprune.training.common import (
    TrainingError,
    TrainSettings,
    load_finetuned,
    predict,
    run_trainer,
    save_checkpoint,
)
from onnx_tokprune.training.l0 import HardConcreteGate
from onnx_tokprune.training.ranking import rank_distillation_loss

BIN_GATE_INIT = 10.0
LAYER_GATE_INIT = -10.0
"""ToP's initial log-alphas (clamped to +-log 100 at once): every bin open, every layer gate closed."""
TOP_RULE = {"rule": "rank_bins", "method": "top", "score_normalizer": "length"}
"""The PruneConfig fields every ToP checkpoint shares (bin masks per layer added)."""


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
    train: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=3.0, learning_rate=2e-5))
    hard: TrainSettings | None = None

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


def expected_relative_flops(
    shape: EncoderShape, lengths: torch.Tensor, layers: tuple[int, ...], keep: torch.Tensor, prunes: torch.Tensor
) -> torch.Tensor:
    """Expected pruned / unpruned FLOPs over a batch of inputs of `lengths` tokens.

    `keep[p]` is layer p's expected kept fraction of non-CLS tokens and `prunes[p]` the probability
    that it prunes (scores it; a layer that does not prune is removed from the graph).
    """
    n = lengths.to(keep.dtype)
    pruned = torch.full_like(n, shape.head_flops())
    unpruned = torch.full_like(n, shape.head_flops())
    fraction = torch.ones((), dtype=keep.dtype, device=keep.device)
    for layer in range(shape.layers):
        n_in = (n - 1) * fraction + 1
        unpruned = unpruned + shape.layer_flops(n, n)
        if layer in layers:
            p = layers.index(layer)
            fraction = fraction * (1 - (1 - keep[p]) * prunes[p])
            n_out = (n - 1) * fraction + 1
            pruned = pruned + shape.layer_flops(n_in, n_out) + prunes[p] * 2 * shape.heads * n_in * n_in
        else:
            pruned = pruned + shape.layer_flops(n_in, n_in)
    return pruned.sum() / unpruned.sum()


class ToPGates(nn.Module):
    """Rank-bin gates [P, B] and layer gates [P] of the pruning layers, with ToP's initialisation."""

    def __init__(self, layers: tuple[int, ...], bins: int, shape: EncoderShape) -> None:
        super().__init__()
        self.layers = tuple(layers)
        self.shape = shape
        self.bin_gates = HardConcreteGate((len(layers), bins), init_mean=BIN_GATE_INIT)
        self.layer_gates = HardConcreteGate((len(layers), 1), init_mean=LAYER_GATE_INIT)

    def forward(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """{layer: (bin gates [B], layer gate [])}: samples in training, binarised in eval."""
        bins, gate = self.bin_gates(), self.layer_gates()
        return {layer: (bins[p], gate[p, 0]) for p, layer in enumerate(self.layers)}

    def expected(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(expected kept fraction [P], probability the layer prunes [P])."""
        return self.bin_gates.open_probability().mean(-1), self.layer_gates.open_probability()[:, 0]

    def expected_relative_flops(self, lengths: torch.Tensor) -> torch.Tensor:
        keep, prunes = self.expected()
        return expected_relative_flops(self.shape, lengths, self.layers, keep, prunes)

    def constrain(self) -> None:
        self.bin_gates.constrain()
        self.layer_gates.constrain()

    def binarized_rules(self, bins: torch.Tensor | None = None) -> tuple[LayerRule, ...]:
        """The layers that prune after binarisation (gate 1 and at least one closed bin); `bins`
        overrides the binarised bin gates [P, B]."""
        bins = self.bin_gates.binarize() if bins is None else bins
        gate = self.layer_gates.binarize()
        rules = []
        for p, layer in enumerate(self.layers):
            mask = tuple(int(b) for b in bins[p].tolist())
            if gate[p, 0] > 0 and 0 in mask:
                rules.append(LayerRule(layer, bin_mask=mask))
        return tuple(rules)


def measured_relative_flops(model, config: PruneConfig | None, rows: list[dict], tokenizer, shape: EncoderShape, batch_size: int = 64) -> float:
    """Relative FLOPs of `config` on encoded inputs (dicts of input_ids / attention_mask /
    token_type_ids lists), run in mask mode (what the artifact removes)."""
    from transformers import DataCollatorWithPadding

    if config is None:
        return 1.0
    encoder = wrap(model, config, "mask")
    collate = DataCollatorWithPadding(tokenizer)
    device = next(model.parameters()).device
    lengths: list[int] = []
    kept: list[dict[int, float]] = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            out = encoder(**batch)
            lengths += batch["attention_mask"].sum(1).tolist()
            counts = [m.sum(1).tolist() for m in out.kept]
            kept += [{layer: float(c[row]) for layer, c in zip(encoder.pruning_layers, counts)} for row in range(len(chunk))]
    return relative_flops(shape, lengths, kept)


def match_target_flops(gates: ToPGates, measure, target: float, method: dict) -> tuple[tuple[LayerRule, ...], float, int]:
    """Open (or close) one bin at a time, the closed bin with the largest log-alpha (or the open one
    with the smallest) among the layers whose gate is open, while the measured relative FLOPs moves
    closer to `target`; a bin that changes nothing on the sample is skipped and left as it was.
    Returns (rules, measured FLOPs, bins changed)."""
    bins = gates.bin_gates.binarize()
    open_layers = gates.layer_gates.binarize()[:, 0] > 0
    log_alpha = gates.bin_gates.log_alpha.detach()

    def rules_of(b):
        rules = gates.binarized_rules(b)
        return rules, measure(PruneConfig(layers=rules, **method) if rules else None)

    rules, flops = rules_of(bins)
    changed = 0
    idle = torch.zeros_like(bins, dtype=torch.bool)
    while True:
        opening = flops < target
        candidates = ((bins == 0) if opening else (bins == 1)) & open_layers[:, None] & ~idle
        if not candidates.any():
            break
        scores = torch.where(candidates, log_alpha, torch.full_like(log_alpha, float("-inf") if opening else float("inf")))
        flat = int(scores.argmax() if opening else scores.argmin())
        trial = bins.clone()
        trial.view(-1)[flat] = 1.0 if opening else 0.0
        trial_rules, trial_flops = rules_of(trial)
        if trial_flops == flops:
            idle.view(-1)[flat] = True  # a bin no sampled token falls into: leave it as it was
            continue
        if abs(trial_flops - target) >= abs(flops - target):
            break
        bins, rules, flops, changed = trial, trial_rules, trial_flops, changed + 1
    return rules, flops, changed


def rematch_checkpoint(
    model_dir: str | os.PathLike, examples, output: str | os.PathLike, target: float | None = None, force: bool = False
) -> tuple[PruneConfig, dict]:
    """Re-binarise a ToP checkpoint's gates (log-alphas from its provenance) and match them to
    `target` (default: the training target) on `examples` (TextExample inputs of the deployment
    distribution; labels are not read). Writes a new checkpoint dir at `output`."""
    from onnx_tokprune.modeling import load_classifier, load_tokenizer

    config = PruneConfig.load(model_dir)
    p = config.provenance
    if config.method != "top" or "bin_log_alpha" not in p:
        raise TrainingError(f"{model_dir} is not a checkpoint of tokprune-train top with gate log-alphas in its provenance")
    target = float(p["target_flops"] if target is None else target)
    if not 0 < target < 1:
        raise TrainingError(f"target FLOPs must be in (0, 1), got {target}")
    tokenizer = load_tokenizer(model_dir)
    model = load_classifier(model_dir)
    shape = EncoderShape.from_hf(model.config)
    layers = tuple(p["candidate_layers"])
    gates = ToPGates(layers, len(p["bin_log_alpha"][0]), shape)
    with torch.no_grad():
        gates.bin_gates.log_alpha.copy_(torch.tensor(p["bin_log_alpha"]))
        gates.layer_gates.log_alpha.copy_(torch.tensor(p["layer_log_alpha"])[:, None])
    limit = model.config.max_position_embeddings
    rows = []
    for ex in examples:
        enc = tokenizer(ex.text, ex.text_pair, truncation=True, max_length=limit, return_token_type_ids=True)
        rows.append({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    method = TOP_RULE

    def measure(cfg):
        return measured_relative_flops(model, cfg, rows, tokenizer, shape)

    before = measure(PruneConfig(layers=gates.binarized_rules(), **method))
    rules, after, changed = match_target_flops(gates, measure, target, method)
    if not rules:
        raise TrainingError("no layer prunes after matching: raise the target")
    matched = {"samples": len(rows), "data": "user inputs", "target_flops": target, "binarized_flops": round(before, 4),
               "matched_flops": round(after, 4), "bins_changed": changed}
    provenance = {**p, "flops_matching": matched, "rematched_from": str(model_dir)}
    new = PruneConfig(layers=rules, provenance=provenance, **method)
    save_checkpoint(model, tokenizer, output, new, force)
    return new, matched


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float, ce_weight: float) -> torch.Tensor:
    """KL(teacher || student) at `temperature` (scaled by T^2) + ce_weight * CE; MSE for regression."""
    if student.shape[-1] == 1:
        return F.mse_loss(student.squeeze(-1), labels.float())
    kd = F.kl_div(F.log_softmax(student / temperature, -1), F.softmax(teacher / temperature, -1), reduction="batchmean")
    loss = kd * temperature**2
    if ce_weight:
        loss = loss + ce_weight * F.cross_entropy(student, labels.long())
    return loss


class _Distilled(nn.Module):
    """Shared by both stages: a frozen teacher in eval mode whatever the Trainer sets."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher
        for p in teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self


class ToPObjective(_Distilled):
    """The ToP training loss around a gate-mode student (see the module docstring)."""

    def __init__(self, student, teacher, gates: ToPGates, settings: ToPSettings, warmup_steps: int) -> None:
        super().__init__(teacher)
        self.student = student
        self.gates = gates
        self.settings = settings
        self.warmup_steps = max(1, warmup_steps)
        self.lagrange = nn.Parameter(torch.zeros(2))
        self.lagrange.register_hook(lambda grad: -grad)
        self.step = 0
        self.teacher_layer = teacher.num_layers - 1
        self.rank_layers = settings.distilled_layers(student.num_layers)
        self.last: dict[str, float] = {}

    def progress(self) -> float:
        return min(1.0, self.step / self.warmup_steps)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        out = self.student(input_ids, attention_mask, token_type_ids, gates=self.gates())
        result = {"logits": out.logits}
        if labels is None:
            return result
        with torch.no_grad():
            teacher = self.teacher(input_ids, attention_mask, token_type_ids)
        s = self.settings
        loss = distillation_loss(out.logits, teacher.logits, labels, s.distill_temperature, s.ce_weight)
        target = teacher.scores[self.teacher_layer]
        rank = sum(rank_distillation_loss(out.scores[l], target, attention_mask, s.top_k, s.sigma) for l in self.rank_layers)
        ramp = self.progress()
        loss = loss + s.rank_weight * max(0.01, 1.0 - ramp) * rank
        expected = self.gates.expected_relative_flops(attention_mask.sum(dim=1))
        gap = (1 - expected) - (1 - s.target_flops) * ramp
        loss = loss + self.lagrange[0] * gap + self.lagrange[1] * gap * gap
        self.last = {
            "expected_flops": float(expected.detach()),
            "target_flops": 1 - (1 - s.target_flops) * ramp,
            "lambda1": float(self.lagrange[0].detach()),
            "lambda2": float(self.lagrange[1].detach()),
            "rank_loss": float(rank.detach()) if torch.is_tensor(rank) else float(rank),
        }
        result["loss"] = loss
        return result


class HardStageObjective(_Distilled):
    """Fixed gates (mask-mode student), the same logit distillation."""

    def __init__(self, student, teacher, settings: ToPSettings) -> None:
        super().__init__(teacher)
        self.student = student
        self.settings = settings

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        out = self.student(input_ids, attention_mask, token_type_ids)
        result = {"logits": out.logits}
        if labels is not None:
            with torch.no_grad():
                teacher = self.teacher(input_ids, attention_mask, token_type_ids)
            s = self.settings
            result["loss"] = distillation_loss(out.logits, teacher.logits, labels, s.distill_temperature, s.ce_weight)
        return result


def _callback(objective: ToPObjective, history: list[dict]):
    from transformers import TrainerCallback

    class ToPCallback(TrainerCallback):
        """Feeds the step to the target ramp, clamps log-alphas after each step, records the constraint."""

        def on_step_begin(self, args, state, control, **kwargs):
            objective.step = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            objective.gates.constrain()
            last = state.global_step == state.max_steps
            if (last or state.global_step % max(1, args.logging_steps) == 0) and objective.last:
                history.append({"step": state.global_step, **objective.last})

    return ToPCallback()


def train_top(
    model_dir: str,
    task: str,
    output: str | os.PathLike,
    settings: ToPSettings,
    data_dir: str | None = None,
    max_train_samples: int | None = None,
    max_length: int = 128,
    force: bool = False,
) -> tuple[PruneConfig, dict[str, float]]:
    """Train ToP from a fine-tuned checkpoint (student start and teacher); save; return (config, dev metrics)."""
    tokenizer, model, spec, train, dev = load_finetuned(model_dir, task, data_dir, max_train_samples, max_length, settings.train.seed)
    num_layers = model.config.num_hidden_layers
    settings.check(num_layers)

    layers = settings.pruning_layers(num_layers)
    teacher = wrap(copy.deepcopy(model), None, "mask", observe_layers=(num_layers - 1,))
    for p in model.base_model.embeddings.parameters():
        p.requires_grad_(False)
    shape = EncoderShape.from_hf(model.config)
    candidates = PruneConfig(layers=tuple(LayerRule(layer, bin_mask=(1,) * settings.bins) for layer in layers), **TOP_RULE)
    student = wrap(model, candidates, "gate", observe_layers=settings.distilled_layers(num_layers))
    gates = ToPGates(layers, settings.bins, shape)
    steps_per_epoch = math.ceil(len(train) / settings.train.batch_size)
    objective = ToPObjective(student, teacher, gates, settings, round(settings.warmup_epochs * steps_per_epoch))
    history: list[dict] = []
    groups = [
        {"params": list(gates.parameters()), "lr": settings.reg_lr, "weight_decay": 0.0},
        {"params": [objective.lagrange], "lr": settings.reg_lr, "weight_decay": 0.0},
    ]
    trainer = run_trainer(
        objective, train, tokenizer, settings.train, groups, constant_extra_lr=True, callbacks=(_callback(objective, history),)
    )
    gates.eval()
    method = TOP_RULE
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
    keep, prunes = gates.expected()
    provenance = {
        "tool": "tokprune-train top",
        "task": spec.name,
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
        "expected_keep": [round(float(k), 4) for k in keep.detach()],
        "layer_gate_open_probability": [round(float(p), 4) for p in prunes.detach()],
        "lagrange": [float(v) for v in objective.lagrange.detach()],
        "flops_matching": matched,
        "bin_log_alpha": [[round(float(v), 3) for v in row] for row in gates.bin_gates.log_alpha.detach()],
        "layer_log_alpha": [round(float(v), 3) for v in gates.layer_gates.log_alpha.detach()[:, 0]],
        "history": history,
    }
    config = PruneConfig(layers=rules, provenance=provenance, **method)
    if settings.hard is not None:
        hard = wrap(model, config, "mask")
        trainer = run_trainer(HardStageObjective(hard, teacher, settings), train, tokenizer, settings.hard)
    metrics = compute_metrics(spec.name, predict(wrap(model, config, "drop"), dev, tokenizer, batch_size=1), dev["labels"])
    config.provenance["dev_metrics_drop"] = metrics
    for p in model.parameters():
        p.requires_grad_(True)
    if trainer.is_world_process_zero():
        save_checkpoint(model, tokenizer, output, config, force)
    return config, metrics
