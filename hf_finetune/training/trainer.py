"""The Trainer with the loss computed here, so that it is right under accumulation and many processes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from hf_finetune.data.text import LENGTH_COLUMN
from hf_finetune.training.callbacks import is_finite
from hf_finetune.training.samplers import SeededLengthGroupedSampler
from hf_finetune.training.streams import ResumableStream, load_position, save_position, stream_loader


class ClassificationLoss:
    """Per-sample cross-entropy with optional label smoothing and class weights.

    Targets are class ids, or soft targets (one probability row per sample, from mixup/cutmix).
    With class weights, a sample's loss is multiplied by its class's weight (for soft targets,
    each class's term by that class's weight). Returns one loss per sample; the Trainer below
    sums and divides them by the number of samples in the whole optimizer step, which makes the
    result independent of how the step is split across gradient accumulation and processes.

    Token logits (batch, tokens, labels) with a tag id per token (-100: not scored) give one loss per
    scored token, which the Trainer divides by the scored tokens of the step (its `num_items_in_batch`).
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None):
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        logits = logits.float()
        if logits.ndim == 3:  # a tag per token: one loss per scored token
            scored = targets != IGNORED
            return F.cross_entropy(logits[scored], targets[scored], weight=weight,
                                   label_smoothing=self.label_smoothing, reduction="none")
        if targets.ndim == 2:  # soft targets already carry any label smoothing
            terms = targets * F.log_softmax(logits, dim=-1)
            if weight is not None:
                terms = terms * weight
            return -terms.sum(dim=-1)
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.label_smoothing,
                               reduction="none")


IGNORED = -100  # a token that carries no tag (padding, special tokens, later sub-tokens)
RUN_STATE = "HfFinetuneRunState"  # our entry in a checkpoint's trainer_state.json


class FinetuneTrainer(Trainer):
    """`transformers.Trainer` whose `compute_loss` is ours.

    Trainer counts the labelled samples of a whole optimizer step (`num_items_in_batch`, summed over
    accumulation steps and, with `average_tokens_across_devices`, over processes). We divide the
    summed per-sample loss by that count, so one process with batch 16 and two processes with batch
    8 take the same step. Models' built-in losses are per-micro-batch means, which are not.
    """

    def __init__(self, *args: Any, loss_fn: ClassificationLoss, plan: Any = None, mixer: Any = None,
                 distiller: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.plan = plan  # strategies.FinetunePlan: parameter groups and freezing; None = Trainer's defaults
        self.mixer = mixer  # timm Mixup for image batches (mixup/cutmix), applied in training only
        self.distiller = distiller  # training.distill.Distiller (distill.teacher), in training only
        # Make Trainer count `num_items_in_batch` for us and not rescale our loss for accumulation.
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        self.nonfinite_loss_seen = False  # read (and reset) by NonFiniteLossCallback before each optimizer step
        self._loss_before_resume = 0.0  # summed per-step losses of the steps a resumed run starts after

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        # Evaluating must not change training: each DataLoader iteration draws its base seed from the
        # global generator, so an evaluation moved dropout and augmentation onward, and a run stopped by
        # SIGTERM at an evaluation step (which skips that evaluation) resumed to other weights.
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            return super().evaluate(*args, **kwargs)

    # --- a resumed run reports what the uninterrupted run would: loss over all steps, all phases ---------

    def _save_checkpoint(self, model, trial):
        # Kept in trainer_state.json (written with the rest of the checkpoint, last): Trainer itself
        # forgets the loss of the steps before a resume, and the phases that started before it.
        self.state.stateful_callbacks[RUN_STATE] = {"args": {}, "attributes": {
            "loss_sum": self._loss_before_resume + self._total_loss_scalar + float(self._tr_loss.item()),
            "phases": list(self.plan.phases) if self.plan is not None else [],
        }}
        if isinstance(self.train_dataset, ResumableStream):  # data.streaming: where the stream is, per process
            save_position(self, os.path.join(self._get_output_dir(trial=trial),
                                             f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"))
        super()._save_checkpoint(model, trial)

    def _load_callback_state(self):
        saved = self.state.stateful_callbacks.pop(RUN_STATE, None)
        if saved is not None:
            self._loss_before_resume = float(saved["attributes"]["loss_sum"])
            if self.plan is not None:
                self.plan.restore_phases(saved["attributes"]["phases"])
        super()._load_callback_state()

    def train(self, *args: Any, **kwargs: Any) -> TrainOutput:
        checkpoint = kwargs.get("resume_from_checkpoint")
        self._stream_restored = False
        if isinstance(self.train_dataset, ResumableStream) and isinstance(checkpoint, str | os.PathLike):
            self._stream_restored = load_position(self, checkpoint)  # continue the stream, do not re-read it
        output = super().train(*args, **kwargs)
        if not self._loss_before_resume:
            return output
        steps = self.state.global_step
        trained = steps - self._initial_global_step
        loss = (self._loss_before_resume + output.training_loss * max(trained, 0.001)) / max(steps, 0.001)
        # The Trainer logged its own train_loss (the steps since the resume) already: training_log.json is
        # written from that log, so its record says the same as metrics.json.
        for entry in reversed(self.state.log_history):
            if "train_loss" in entry:
                entry["train_loss"] = loss
                break
        return TrainOutput(output.global_step, loss, {**output.metrics, "train_loss": loss})

    def create_optimizer(self, model=None):
        if self.plan is None or self.optimizer is not None:
            return super().create_optimizer(model)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model or self.model)
        # Every parameter, frozen or not, with its block's learning rate: unfreezing later needs no
        # new optimizer, and a frozen parameter (no gradient) is left untouched by AdamW.
        self.optimizer = optimizer_cls(self.plan.param_groups, **optimizer_kwargs)
        return self.optimizer

    def _clip_grad_norm(self, model):
        if self.plan is not None:
            self.plan.freeze.drop_frozen_grads()  # frozen gradients must not count in the clipping norm
        return super()._clip_grad_norm(model)

    def _groups_by_length(self, dataset: Any) -> bool:
        return self.args.train_sampling_strategy == "group_by_length" and LENGTH_COLUMN in getattr(
            dataset, "column_names", ()
        )

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self._groups_by_length(dataset):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            # Grouped by the global batch (all processes, all accumulation steps): the index order is
            # then the same whatever the number of processes, and each process takes its share.
            return SeededLengthGroupedSampler(
                lengths=dataset[LENGTH_COLUMN],
                batch_size=self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size,
                seed=seed,
                epoch_source=lambda: int(self.state.epoch or 0),
            )
        if self.args.train_sampling_strategy == "group_by_length":
            # Rows of one size (cached features, images): nothing to group. Accelerate turns this
            # sampler into its seeded version, so the order still depends only on (seed, epoch).
            return torch.utils.data.RandomSampler(dataset)
        return super()._get_train_sampler(train_dataset)

    def get_resumed_dataloader(self, dataloader, num_batches):
        if getattr(self, "_stream_restored", False):  # the stream starts after the last batch trained on
            return dataloader
        return super().get_resumed_dataloader(dataloader, num_batches)

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False,
                        dataloader_key=None):
        if isinstance(dataset, ResumableStream):  # this process's own shard, as data/streaming.py split it
            return stream_loader(self, dataset, batch_size)
        if is_training or not self.args.dataloader_drop_last:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        # drop_last is for training batches (mixup/cutmix pair samples up); evaluation sees every sample,
        # or a validation set smaller than one batch would be scored on nothing.
        self.args.dataloader_drop_last = False
        try:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        finally:
            self.args.dataloader_drop_last = True

    # Set where a callback reads evaluation predictions row by row (rank's ties after fine-tuning pair each
    # candidate's predictions with another's: search/trials.PauseAt.watch): validation is then evaluated in its
    # row order. Grouped by length (text), its order would be each tokenizer's own.
    eval_in_order = False

    def _get_eval_sampler(self, eval_dataset):
        if (self.args.train_sampling_strategy == "group_by_length"
                and (self.eval_in_order or not self._groups_by_length(eval_dataset))):
            return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
        return super()._get_eval_sampler(eval_dataset)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        cached_teacher = self.distiller.pop(inputs) if self.distiller is not None else None
        targets = labels
        if self.mixer is not None and model.training:
            inputs["pixel_values"], targets = self.mixer(inputs["pixel_values"], labels)
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        per_sample = self.loss_fn(logits, targets)
        if self.distiller is not None and model.training:  # on the same (augmented, mixed) batch
            per_sample = self.distiller.blend(per_sample, logits, inputs, cached_teacher)
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


def run_precision(training: Any) -> torch.dtype | None:
    """The run's mixed precision (None: full), from TrainingArguments or a resolved `training` dict."""
    get = training.get if isinstance(training, dict) else lambda key, default=None: getattr(training, key, default)
    return torch.bfloat16 if get("bf16", False) else torch.float16 if get("fp16", False) else None


@contextlib.contextmanager
def full_precision(model: Any) -> Iterator[None]:
    """Runs `model` without the mixed-precision autocast that accelerate wrapped its forward in.

    The run's reported metrics must be those of the saved fp32 weights as `pipeline()` and
    `hf-finetune predict` run them; evaluations during training (model selection) keep the faster
    mixed precision.
    """
    original = model.__dict__.get("_original_forward")
    if original is None:
        yield
        return
    patched = model.__dict__["forward"]
    model.forward = original
    try:
        yield
    finally:
        model.forward = patched
