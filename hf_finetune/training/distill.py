"""Knowledge distillation (Hinton et al., 2015): the student learns the labels and the teacher's soft predictions.

    per-sample loss = alpha x CE(student, labels) + (1 - alpha) x T^2 x KL(teacher_T || student_T)

where `x_T` is softmax(logits / T). The cross-entropy is the run's own (class weights, label
smoothing, mixup/cutmix soft targets); the KL term is computed on the very batch the student sees.
Evaluation losses stay the plain cross-entropy, so validation is comparable with a run trained alone.

The teacher is a finished run or an ensemble folder (its members' probabilities, weighted, are the
teacher's distribution; its "logits" are their log). It is frozen (no gradients), in eval mode,
loaded next to the Trainer, never handed to Accelerate (so never wrapped by DDP/FSDP/DeepSpeed),
on the run's device and in the run's precision (bf16/fp16 weights when the run uses them).

    text    inputs are deterministic here (no text augmentation), so the teacher's log-probabilities
            on every training row are computed once before training, from the teacher's own
            tokenization of the raw texts (its tokenizer and max_length may differ from the
            student's), and ride along in the batch as a column
    vision  augmentation is random, so the teacher runs on each (augmented, mixed) batch, re-normalised
            from the student's mean/std to its own, and resized when its input size differs
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hf_finetune.errors import DataError, Problem, show
from hf_finetune.tasks import get_task, task_of
from hf_finetune.training.trainer import run_precision

logger = logging.getLogger(__name__)

TEACHER_COLUMN = "teacher_log_probs"  # text: the cached teacher log-probabilities of each training row


@dataclass
class TeacherMember:
    model: Any
    weight: float
    predictor: Any  # hf_finetune.predictor.Predictor: tokenizer, max_length, labels
    mean: torch.Tensor | None = None  # vision: (1, 3, 1, 1) normalisation of the teacher's inputs
    std: torch.Tensor | None = None
    size: tuple[int, int] | None = None  # vision: the teacher's input height and width


def kl_per_sample(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 x KL(softmax(teacher / T) || softmax(student / T)), one value per sample.

    `teacher_log_probs` may be any logits (log-probabilities are logits): dividing by T and taking
    log_softmax gives the softened teacher distribution.
    """
    t = temperature
    student = F.log_softmax(student_logits.float() / t, dim=-1)
    teacher = F.log_softmax(teacher_log_probs.float() / t, dim=-1)
    return (teacher.exp() * (teacher - student)).sum(dim=-1) * (t * t)


class Distiller:
    """What the Trainer calls: takes the cached teacher column out of a batch, and blends the losses."""

    def __init__(self, members: list[TeacherMember], temperature: float, alpha: float, dtype: torch.dtype | None,
                 student_mean: torch.Tensor | None = None, student_std: torch.Tensor | None = None):
        self.members = members
        self.temperature = temperature
        self.alpha = alpha
        self.dtype = dtype  # the run's half precision, or None for fp32
        self.student_mean = student_mean
        self.student_std = student_std

    def pop(self, inputs: dict[str, Any]) -> torch.Tensor | None:
        """Removes and returns the cached teacher log-probabilities (text), so the student never sees them."""
        return inputs.pop(TEACHER_COLUMN, None)

    def blend(self, per_sample_ce: torch.Tensor, student_logits: torch.Tensor, inputs: dict[str, Any],
              cached: torch.Tensor | None) -> torch.Tensor:
        """alpha x CE + (1 - alpha) x T^2 x KL(teacher || student), per sample."""
        teacher = cached if cached is not None else self.teacher_log_probs(inputs)
        kl = kl_per_sample(student_logits, teacher.to(student_logits.device), self.temperature)
        return self.alpha * per_sample_ce + (1.0 - self.alpha) * kl

    @torch.no_grad()
    def teacher_log_probs(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Vision: the teacher's log-probabilities of the batch the student sees (augmented, mixed)."""
        pixels = inputs.get("pixel_values")
        if pixels is None:
            raise DataError("distill.teacher: a text batch has no cached teacher predictions (internal error)")
        raw = pixels.float() * self.student_std.to(pixels.device) + self.student_mean.to(pixels.device)
        probs = None
        for m in self.members:
            x = (raw - m.mean.to(raw.device)) / m.std.to(raw.device)
            if m.size is not None and tuple(x.shape[-2:]) != m.size:
                x = F.interpolate(x, size=m.size, mode="bilinear", align_corners=False, antialias=True)
            with _autocast(x.device, self.dtype):
                logits = m.model(pixel_values=x.to(self.dtype or torch.float32)).logits
            p = m.weight * torch.softmax(logits.float(), dim=-1)
            probs = p if probs is None else probs + p
        return torch.log(probs.clamp_min(1e-12))


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def _rng_untouched():
    """Loading and running the teacher must not move the run's random streams: with alpha = 1 a
    distilled run is then the run trained alone, step for step."""
    state = (random.getstate(), np.random.get_state(), torch.random.get_rng_state(),
             torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.random.set_rng_state(state[2])
        if state[3] is not None:
            torch.cuda.set_rng_state_all(state[3])


def teacher_problems(sections: Mapping[str, Any]) -> list[Problem]:
    """distill.teacher holds a finished run (or ensemble) for the recipe's task: a recipe check that reads the
    teacher's run.json, so the entry points pass it to validation (hf_finetune.capability_checks).

    Args:
        sections: the recipe's validated sections by name (None or absent where invalid or not given).
    """
    distill, task = sections.get("distill"), sections.get("task")
    if distill is None or distill.teacher is None:
        return []
    from hf_finetune.outputs import read_run

    run = read_run(distill.teacher)
    if run is None:
        return [Problem("distill.teacher", f"{show(distill.teacher)} holds no finished run or ensemble "
                                           "(no complete run.json)")]
    if task is not None and run.get("task") != task:
        return [Problem("distill.teacher", f"{show(distill.teacher)} is a {run.get('task')} model; "
                                           f"the recipe's task is {task}")]
    from hf_finetune.errors import DamagedRunError
    from hf_finetune.outputs import read_finished_run

    try:
        read_finished_run(distill.teacher)  # its weights are what it wrote (checked once per process)
    except DamagedRunError as exc:
        return [Problem("distill.teacher", str(exc))]
    return []


def load_teacher(folder: str, args: Any, labels: list[str]) -> list[TeacherMember]:
    """The teacher's models (one, or an ensemble's members): frozen, eval mode, on the run's device and precision.

    Raises:
        DataError: the teacher predicts other labels, or the same labels in another order.
    """
    from hf_finetune.predictor import load_predictor

    predictor = load_predictor(folder)
    if list(predictor.labels) != list(labels):
        same = sorted(predictor.labels) == sorted(labels)
        raise DataError(
            f"distill.teacher: {folder} predicts {', '.join(predictor.labels)} but the data's labels are "
            f"{', '.join(labels)}" + ("; the same names in another order" if same else "")
            + ": the teacher's probabilities must line up with the student's classes")
    parts = getattr(predictor, "members", None) or [predictor]
    weights = getattr(predictor, "weights", None) or [1.0]
    dtype = run_precision(args)
    members = []
    for part, weight in zip(parts, weights, strict=True):
        model = part.model.eval().requires_grad_(False).to(args.device)
        if dtype is not None:
            model = model.to(dtype)
        member = TeacherMember(model, float(weight), part)
        inputs = get_task(part.task).inputs
        if not inputs.teacher_cached:  # it sees the student's (augmented) batches, in its own normalisation
            member.mean, member.std, member.size = inputs.normalisation(model)
        members.append(member)
    logger.info("Distillation teacher %s: %d model(s), %s parameters, frozen, %s", folder, len(members),
                f"{sum(sum(p.numel() for p in m.model.parameters()) for m in members):,}",
                str(dtype or torch.float32).removeprefix("torch."))
    return members


@torch.no_grad()
def cache_text_teacher(recipe: Any, args: Any, data: Any, members: list[TeacherMember]) -> np.ndarray:
    """The teacher's log-probabilities of every training row, from its own tokenization of the raw texts.

    The data stage is replayed with the teacher's tokenizer (the same carving and caps, so the same
    rows in the same order); the row order is checked against the student's training split.
    """
    from torch.utils.data import DataLoader

    from hf_finetune.data import build_datasets
    from hf_finetune.data.labels import LABEL_COLUMN

    student_train = data.splits["train"]
    probs = None
    for m in members:
        with args.main_process_first(desc="tokenizing for the teacher"):
            theirs = build_datasets(recipe, get_task(m.predictor.task).inputs.finished_encoding(m.predictor))
        train = theirs.splits["train"]
        if len(train) != len(student_train) or train[LABEL_COLUMN] != student_train[LABEL_COLUMN]:
            raise DataError("distill.teacher: the teacher's tokenization of the training rows does not line up "
                            "with the student's (internal error)")
        loader = DataLoader(train, batch_size=args.per_device_eval_batch_size, shuffle=False,
                            collate_fn=theirs.collator)
        parts = []
        for batch in loader:
            batch.pop("labels")
            batch = {k: v.to(args.device) for k, v in batch.items()}
            with _autocast(args.device, run_precision(args)):
                parts.append(torch.softmax(m.model(**batch).logits.float(), dim=-1).cpu())
        p = m.weight * torch.cat(parts).double()
        probs = p if probs is None else probs + p
    return torch.log(probs.clamp_min(1e-12)).float().numpy()


class DistillCollator:
    """The run's collator, plus the cached teacher column (when the rows have it) as a float tensor."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features or TEACHER_COLUMN not in features[0]:
            return self.inner(features)
        teacher = torch.tensor([f[TEACHER_COLUMN] for f in features], dtype=torch.float32)
        batch = self.inner([{k: v for k, v in f.items() if k != TEACHER_COLUMN} for f in features])
        batch[TEACHER_COLUMN] = teacher
        return batch


def build_distiller(recipe: Any, args: Any, data: Any, model: Any) -> tuple[Distiller, Any, Any]:
    """The distiller for the recipe's `distill` section, and the training split and collator to use.

    Returns:
        (distiller, training split (text: with the teacher column), collator).
    """
    from hf_finetune.data.carved import check_teacher_carve

    spec = recipe.distill
    check_teacher_carve(spec.teacher, data.carved, recipe.data)  # before any teacher model loads
    with _rng_untouched():
        members = load_teacher(spec.teacher, args, list(data.labels.names))
        train, collator = data.splits["train"], data.collator
        student_mean = student_std = None
        inputs = task_of(recipe).inputs
        if inputs.teacher_cached:
            cached = cache_text_teacher(recipe, args, data, members)
            train = train.add_column(TEACHER_COLUMN, cached.tolist())
            collator = DistillCollator(collator)
            logger.info("Teacher log-probabilities cached for %d training rows", len(train))
        else:
            student_mean, student_std, _ = inputs.normalisation(model)
    distiller = Distiller(members, spec.temperature, spec.alpha, run_precision(args), student_mean, student_std)
    logger.info("Distillation: loss = %.3g x cross-entropy + %.3g x T^2 x KL(teacher || student), T = %g",
                spec.alpha, 1 - spec.alpha, spec.temperature)
    return distiller, train, collator
