"""Learned Token Pruning (Kim et al., KDD'22): soft thresholds, then a hard stage.

Works on sequence classifiers and on span (QA) models (the span loss; the soft stage restores removed
tokens in expectation, modeling.encoder). Soft stage: every layer gets a trainable threshold, initialised as LTP does
(theta_l = final_threshold * (l + 1) / L) or, with `init_flops`, by calibration to a relative-FLOPs
target (our addition: LTP's 0.01 suits BERT-base padded to 128, not every model), and its output is
multiplied by
sigmoid((score - theta_l) / T). Loss = task loss + lambda * sum_l mean(soft mask_l) over real tokens.
Thresholds are their own parameter group with their own learning rate.
With `distill` (our addition), the task loss of both stages is replaced by logit distillation from the
starting checkpoint, frozen (training.distill: KL at `distill_temperature`, + `ce_weight` * task loss),
as ToP trains.

Hard stage: thresholds frozen; the mask-mode model (tokens whose score falls below the threshold
are masked from then on, exactly what the exported graph removes) fine-tunes the weights.
After the hard stage, a threshold that a score of 256 training sentences sits on (within
calibrate.DECISION_RTOL, where PyTorch and onnxruntime may decide differently) moves to the nearest
gap wide enough (calibrate.settle_thresholds; recorded in the provenance).
Layers whose learned threshold ends at or below 0 do not prune and are left out of tokprune.json.
With `protect` ("second_text", our addition) a pair's second text is kept at every layer in both
stages and in the result (PruneConfig.protect).
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field

from onnx_tokprune.config import PROTECTS, LayerRule, PruneConfig
from onnx_tokprune.modeling import wrap
from onnx_tokprune.training.common import TrainingError, TrainSettings, check_protect_data, load_task, run_trainer, save_checkpoint
from onnx_tokprune.training.distill import DistilledObjective
from onnx_tokprune.training.resume import DEFAULT_SAVE_STEPS, MANIFEST, describe_file, open_run


@dataclass
class LTPSettings:
    """LTP's knobs (defaults: the paper's / reference code's values)."""

    lam: float = 0.15
    temperature: float = 1e-3
    threshold_lr: float = 1e-4
    final_threshold: float = 0.01
    init_flops: float | None = None
    """Start from thresholds calibrated to this relative FLOPs (tokprune-calibrate on 256 training
    sentences, the pruning layers, geometric schedule) instead of LTP's linear `final_threshold` ramp."""
    normalizer_length: int = 128
    layers: tuple[int, ...] | None = None
    """Pruning layers (each scores its tokens and removes those under its threshold); None: every
    layer, as LTP does. A layer that does not prune keeps onnxruntime's fused Attention when exported."""
    distill: bool = False
    """Distil the starting checkpoint's logits (frozen teacher) instead of the task loss alone."""
    distill_temperature: float = 2.0
    ce_weight: float = 0.0
    """With `distill`: weight of the task loss beside the distillation loss."""
    protect: str | None = None
    """PruneConfig.protect of every stage and of the result ("second_text": a pair's second text is
    kept at every layer, its soft mask 1; calibration and the regulariser count it as kept)."""
    soft: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=1.0, learning_rate=2e-5))
    hard: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=1.0, learning_rate=1e-5))

    def check(self, num_layers: int | None = None) -> None:
        """Range checks; with `num_layers`, also that the pruning layers exist."""
        if not 0 <= self.lam <= 10:
            raise TrainingError(f"lambda must be in [0, 10], got {self.lam}")
        if not 0 < self.temperature <= 1:
            raise TrainingError(f"temperature must be in (0, 1], got {self.temperature}")
        if self.threshold_lr <= 0 or self.final_threshold <= 0:
            raise TrainingError("threshold learning rate and final threshold must be positive")
        if self.init_flops is not None and not 0 < self.init_flops <= 1:
            raise TrainingError(f"init FLOPs must be in (0, 1], got {self.init_flops}")
        if self.distill_temperature <= 0 or self.ce_weight < 0:
            raise TrainingError("distillation temperature must be positive and the CE weight non-negative")
        if self.ce_weight and not self.distill:
            raise TrainingError("a CE weight is for distillation: add --distill (without it the loss is the task loss)")
        if self.protect is not None and self.protect not in PROTECTS:
            raise TrainingError(f"protect must be one of {', '.join(PROTECTS)}, got {self.protect!r}")
        if self.layers is not None and not self.layers:
            raise TrainingError("pruning layers must not be empty (leave --layers out for every layer)")
        if num_layers is not None and any(not 0 <= layer < num_layers for layer in self.pruning_layers(num_layers)):
            raise TrainingError(f"pruning layers {list(self.pruning_layers(num_layers))} must be within 0..{num_layers - 1}")

    def pruning_layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(sorted(set(self.layers))) if self.layers else tuple(range(num_layers))


def initial_config(num_layers: int, settings: LTPSettings) -> PruneConfig:
    """LTP's starting point: thresholds rising linearly with depth to `final_threshold` at the last
    layer (each pruning layer keeps its value on that ramp)."""
    rules = tuple(LayerRule(layer, threshold=settings.final_threshold * (layer + 1) / num_layers) for layer in settings.pruning_layers(num_layers))
    return PruneConfig(rule="threshold", method="ltp", layers=rules, normalizer_length=settings.normalizer_length, protect=settings.protect)


def calibrated_config(model, task, settings: LTPSettings) -> PruneConfig:
    """Thresholds for the pruning layers calibrated to `settings.init_flops` on 256 seeded training inputs."""
    from onnx_tokprune.calibrate import calibrate

    result = calibrate(
        model, task.text_encoder(), None, target_flops=settings.init_flops, layers=settings.pruning_layers(model.config.num_hidden_layers),
        normalizer_length=settings.normalizer_length, progress=False, schedule="geometric",
        rows=task.calibration_rows(settings.soft.seed), protect=settings.protect,
    )
    return PruneConfig(rule="threshold", method="ltp", layers=result.config.layers, normalizer_length=settings.normalizer_length, protect=settings.protect)


def mask_regularizer(lam: float):
    """lambda * sum over pruning layers of the mean soft mask over real (non-padding) tokens."""

    def term(output, attention_mask):
        real = attention_mask.to(output.kept[0].dtype)
        return lam * sum((soft * real).sum() / real.sum() for soft in output.kept)

    return term


def objective(task, model, teacher, settings: LTPSettings, extra=None):
    """The training loss around `model`: the task's own loss, or with a `teacher` logit distillation."""
    if teacher is None:
        return task.objective(model, extra)
    return DistilledObjective(model, teacher, settings.distill_temperature, settings.ce_weight, extra)


def learned_config(thresholds: dict[int, float], settings: LTPSettings, provenance: dict) -> PruneConfig:
    rules = tuple(LayerRule(layer, threshold=value) for layer, value in sorted(thresholds.items()) if value > 0)
    if not rules:
        raise TrainingError("every learned threshold ended at or below 0 (nothing prunes): raise --lambda")
    return PruneConfig(
        rule="threshold", method="ltp", layers=rules, normalizer_length=settings.normalizer_length, provenance=provenance,
        protect=settings.protect,
    )


def train_ltp(
    model_dir: str,
    data,
    output: str | os.PathLike,
    settings: LTPSettings,
    max_train_samples: int | None = None,
    max_length: int = 128,
    force: bool = False,
    save_steps: int = DEFAULT_SAVE_STEPS,
) -> tuple[PruneConfig, dict[str, float]]:
    """Run both LTP stages from a fine-tuned checkpoint; save the result; return (config, dev metrics).
    `data`: a TrainingInput (sequence classifier) or a training.qa.QAData (span model, span loss).
    Resumable (training.resume): each stage checkpoints every `save_steps` steps to `output`.resume,
    and a finished soft stage is kept there, so rerunning the same call continues where it stopped."""
    settings.check()
    spec = {"command": "ltp", "model": describe_file(model_dir), "data": data.describe(), "settings": asdict(settings),
            "max_train_samples": max_train_samples, "max_length": max_length}
    run = open_run(output, spec, save_steps, force)
    tokenizer, model, task = load_task(model_dir, data, max_train_samples, max_length, settings.soft.seed)
    settings.check(model.config.num_hidden_layers)
    check_protect_data(settings.protect, model, task, settings.soft.seed)
    teacher = wrap(copy.deepcopy(model), None, "mask") if settings.distill else None
    soft_stage = run.stage("soft")
    if soft_stage is not None and soft_stage.is_done():
        config = PruneConfig.load(soft_stage.done)
        model.load_state_dict(type(model).from_pretrained(soft_stage.done).state_dict())
    else:
        config = _soft_stage(model, tokenizer, task, teacher, settings, model_dir, max_train_samples, soft_stage)

    hard = wrap(model, config, "mask")
    trainer = run_trainer(objective(task, hard, teacher, settings), task.train, tokenizer, settings.hard, stage=run.stage("hard"))
    from onnx_tokprune.calibrate import settle_thresholds

    model.eval()
    config, moved = settle_thresholds(model, config, task.text_encoder(), rows=task.calibration_rows(settings.soft.seed))
    config.provenance["thresholds_moved_off_scores"] = {str(k): v for k, v in moved.items()}
    metrics = task.evaluate(wrap(model, config, "drop"))
    config.provenance["dev_metrics_drop"] = metrics
    if trainer.is_world_process_zero():
        save_checkpoint(model, tokenizer, output, config, force, {MANIFEST: run.manifest(metrics)})
        run.finish()
    return config, metrics


def _soft_stage(model, tokenizer, task, teacher, settings: LTPSettings, model_dir: str, max_train_samples: int | None, stage) -> PruneConfig:
    """The soft stage: trains weights and thresholds; returns the learned config (with provenance)
    and, with a resume `stage`, hands the weights and config over in stage.done."""
    if settings.init_flops is not None:
        start = calibrated_config(model.eval(), task, settings)
    else:
        start = initial_config(model.config.num_hidden_layers, settings)
    soft = wrap(model, start, "soft", temperature=settings.temperature)
    thresholds = [decision.threshold for decision in soft.decisions.values()]
    groups = [{"params": thresholds, "lr": settings.threshold_lr, "weight_decay": 0.0}]
    trainer = run_trainer(objective(task, soft, teacher, settings, mask_regularizer(settings.lam)), task.train, tokenizer, settings.soft, groups, stage=stage)
    provenance = {
        "tool": "tokprune-train ltp",
        "task": task.describe(),
        "base": str(model_dir),
        "lambda": settings.lam,
        "temperature": settings.temperature,
        "threshold_lr": settings.threshold_lr,
        "distill": {"temperature": settings.distill_temperature, "ce_weight": settings.ce_weight} if settings.distill else None,
        "layers": list(settings.pruning_layers(model.config.num_hidden_layers)),
        "initial_thresholds": {str(r.layer): r.threshold for r in start.layers},
        "init_flops": settings.init_flops,
        "soft_epochs": settings.soft.epochs,
        "hard_epochs": settings.hard.epochs,
        "max_train_samples": max_train_samples,
        "learned_thresholds": {str(k): v for k, v in soft.thresholds().items()},
    }
    config = learned_config(soft.thresholds(), settings, provenance)
    if stage is not None and trainer.is_world_process_zero():
        save_checkpoint(model, tokenizer, stage.done, config)
    return config
