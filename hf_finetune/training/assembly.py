"""Assemble the Trainer for a recipe: strategy, loss, augmentation mixing, early stopping."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_finetune.data import PreparedData
from hf_finetune.data.labels import LABEL_COLUMN, LabelSpace
from hf_finetune.errors import DataError
from hf_finetune.metrics import logits_to_predictions
from hf_finetune.recipe import Recipe
from hf_finetune.tasks import task_of
from hf_finetune.training.distributed import configure_fsdp_wrapping
from hf_finetune.training.kept_evaluation import KeptEvaluations
from hf_finetune.training.strategies import FinetunePlan, StrategyCallback, build_plan
from hf_finetune.training.streams import ForgetTrainedPositions, ResumableStream
from hf_finetune.training.trainer import ClassificationLoss, FinetuneTrainer, run_precision

logger = logging.getLogger(__name__)


@dataclass
class TrainerSetup:
    trainer: FinetuneTrainer
    eval_splits: dict[str, Any]  # role -> what the final evaluation scores (cached features or data)
    model: Any  # the full model, saved at the end
    tokenizer: Any
    plan: FinetunePlan | None  # None for a probe on cached features (only the head exists for the trainer)
    class_weights: dict[str, float] | None
    lora: dict[str, Any] | None = None  # strategy lora: what was adapted and how many parameters train
    save_adapter: bool = False
    evaluations: KeptEvaluations | None = None  # the kept model's own validation predictions (finish reuses them)

    def save(self, folder: Path) -> None:
        """Saves the full model (and tokenizer); every process calls it (FSDP/DeepSpeed gather)."""
        if self.lora is not None:
            from hf_finetune.training.lora import save_merged

            save_merged(self.trainer, self.tokenizer, folder, self.save_adapter)
        elif self.plan is not None:
            self.trainer.save_model(str(folder))
        elif self.trainer.is_world_process_zero():
            self.model.save_pretrained(folder)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(folder)


def resolve_class_weights(spec: Any, labels: LabelSpace, train: Any, labeling: Any = None) -> dict[str, float] | None:
    """The recipe's class weights as {label: weight}; `balanced` is n / (classes x count) on train (words
    per tag, with the token-classification labeling)."""
    if spec is None:
        return None
    if spec == "balanced" and hasattr(labeling, "balanced_weights"):  # label sets: BCE pos_weight per label
        return labeling.balanced_weights(train, labels.names)
    if spec == "balanced":
        counts = (np.asarray(labeling.counts(train, labels.num_labels)) if labeling is not None
                  else np.bincount(np.asarray(train[LABEL_COLUMN]), minlength=labels.num_labels))
        total, k = counts.sum(), labels.num_labels
        # A class absent from (capped) training data never weighs in the loss; 1.0 keeps the record clean.
        return {name: float(total / (k * c)) if c else 1.0 for name, c in zip(labels.names, counts, strict=True)}
    problem = class_weights_problem(spec, labels.names)
    if problem:
        raise DataError(f"finetune.class_weights: {problem}")
    if isinstance(spec, list):
        return dict(zip(labels.names, map(float, spec), strict=True))
    return {name: float(spec.get(name, 1.0)) for name in labels.names}


def class_weights_problem(spec: Any, names: Any) -> str | None:
    """Why a list or mapping of class weights does not fit the label names, or None (check finds it too)."""
    names = list(names)
    if isinstance(spec, list) and len(spec) != len(names):
        return f"gives {len(spec)} weights for {len(names)} labels ({', '.join(names)})"
    if isinstance(spec, dict):
        unknown = sorted(set(map(str, spec)) - set(names))
        if unknown:
            return f"'{unknown[0]}' is not a label; labels: {', '.join(names)}"
    return None


def _mixer(recipe: Recipe, args: Any, num_labels: int) -> Any:
    aug = recipe.augmentation
    if not aug.mixes:  # mixup/cutmix: an image augmentation (recipe validation refuses it for other inputs)
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mix_prob, switch_prob=aug.mix_switch_prob,
                 label_smoothing=args.label_smoothing_factor, num_classes=num_labels)


def build_trainer(recipe: Recipe, args: Any, data: PreparedData, model: Any, tokenizer: Any,
                  metrics: Any) -> TrainerSetup:
    """The trainer for the recipe's strategy; a probe on cached features trains the head alone."""
    from transformers import EarlyStoppingCallback

    ft = recipe.finetune
    task = task_of(recipe)
    weights = resolve_class_weights(ft.class_weights, data.labels, data.label_rows, task.problem.labeling)
    if weights is not None:
        logger.info("Class weights: %s%s", ", ".join(f"{k} {v:.3g}" for k, v in weights.items()),
                    f" (counted on the first {len(data.label_rows)} rows of the training stream)"
                    if data.streaming and ft.class_weights == "balanced" else "")
    weight_tensor = torch.tensor(list(weights.values()), dtype=torch.float32) if weights else None
    # the task's own loss (regression: MSE/Huber; label sets: BCE with pos_weight), else cross-entropy
    loss = (task.problem.loss(ft, args.label_smoothing_factor, weight_tensor)
            or ClassificationLoss(label_smoothing=args.label_smoothing_factor, class_weights=weight_tensor))
    callbacks = []
    if ft.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(ft.early_stopping_patience, ft.early_stopping_threshold))
    # what evaluation keeps of the logits: class ids, unless the task's metrics read the values (regression,
    # label sets)
    keep = getattr(metrics, "preprocess_logits", logits_to_predictions)
    evaluations = KeptEvaluations(metrics)
    callbacks.append(evaluations)
    common = dict(args=args, compute_metrics=evaluations, preprocess_logits_for_metrics=keep,
                  loss_fn=loss, callbacks=callbacks)

    if ft.cache_features:
        from hf_finetune.models.features import cache_features, collate_features

        head, cached = cache_features(model, data.splits, data.collator, args.per_device_eval_batch_size,
                                      args.device, run_precision(args))
        trainer = FinetuneTrainer(model=head, train_dataset=cached["train"], eval_dataset=cached["validation"],
                                  data_collator=collate_features, **common)
        return TrainerSetup(trainer, cached, model, tokenizer, plan=None, class_weights=weights,
                            evaluations=evaluations)

    lora = None
    if ft.strategy == "lora":
        from hf_finetune.training.lora import apply_lora

        model, lora = apply_lora(model, ft.lora, task.problem.peft_task_type)
    plan = build_plan(model, ft, args)
    distiller, train, collator = None, data.splits["train"], data.collator
    if data.streaming:  # read pass after pass until max_steps; its position is saved with each checkpoint
        train = ResumableStream(train, args.per_device_train_batch_size)
        callbacks.append(ForgetTrainedPositions(train))
    if recipe.distill.teacher is not None:
        from hf_finetune.training.distill import build_distiller

        distiller, train, collator = build_distiller(recipe, args, data, model)
    trainer = FinetuneTrainer(
        model=model, train_dataset=train, eval_dataset=data.splits["validation"],
        data_collator=collator, processing_class=tokenizer, plan=plan,
        mixer=_mixer(recipe, args, data.labels.num_labels), distiller=distiller, **common,
    )
    trainer.add_callback(StrategyCallback(plan))
    if lora is not None:
        from hf_finetune.training.lora import check_sharding

        check_sharding(trainer)
    configure_fsdp_wrapping(trainer.accelerator, model)
    return TrainerSetup(trainer, data.splits, model, tokenizer, plan=plan, class_weights=weights, lora=lora,
                        save_adapter=recipe.output.save_adapter, evaluations=evaluations)
