"""The Trainer with the loss computed here, so that it is right under accumulation and many processes."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from hf_finetune.callbacks import is_finite
from hf_finetune.data.text import LENGTH_COLUMN
from hf_finetune.samplers import SeededLengthGroupedSampler


class ClassificationLoss:
    """Per-sample cross-entropy with optional label smoothing and class weights.

    Returns one loss per sample; the Trainer below sums and normalizes them by the number of samples
    in the whole optimizer step, which makes the result independent of how the step is split across
    gradient accumulation and processes.
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None):
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        return F.cross_entropy(
            logits.float(), labels, weight=weight, label_smoothing=self.label_smoothing, reduction="none"
        )


class FinetuneTrainer(Trainer):
    """`transformers.Trainer` whose `compute_loss` is ours.

    Trainer counts the labelled samples of a whole optimizer step (`num_items_in_batch`, summed over
    accumulation steps and, with `average_tokens_across_devices`, over processes). We divide the
    summed per-sample loss by that count, so one process with batch 16 and two processes with batch
    8 take the same step. Models' built-in losses are per-micro-batch means, which are not.
    """

    def __init__(self, *args: Any, loss_fn: ClassificationLoss, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        # Make Trainer count `num_items_in_batch` for us and not rescale our loss for accumulation.
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        self.nonfinite_loss_seen = False  # read (and reset) by NonFiniteLossCallback before each optimizer step

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and LENGTH_COLUMN in getattr(
            dataset, "column_names", ()
        ):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return SeededLengthGroupedSampler(
                lengths=dataset[LENGTH_COLUMN],
                batch_size=self.args.train_batch_size * self.args.gradient_accumulation_steps,
                seed=seed,
                epoch_source=lambda: int(self.state.epoch or 0),
            )
        return super()._get_train_sampler(train_dataset)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        per_sample = self.loss_fn(logits, labels)
        if model.training and not is_finite(per_sample):
            self.nonfinite_loss_seen = True
        if num_items_in_batch is None:
            loss = per_sample.mean()
        else:
            loss = per_sample.sum() / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                # The count covers every process; DDP averages gradients over processes, so scale back up.
                loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
