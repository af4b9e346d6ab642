"""`distill`: learning from a teacher's soft predictions. Whether the teacher folder holds a finished run is
the distillation capability's check (training/distill.py: `teacher_problems`)."""

from __future__ import annotations

from pydantic import Field

from hf_finetune.errors import Problem
from hf_finetune.recipe.sections.base import Section


class Distill(Section):
    """Knowledge distillation: the recipe's model (the student) also learns the teacher's soft predictions."""

    teacher: str | None = Field(
        None,
        description="Teacher: a finished run folder or an ensemble folder (`hf-finetune ensemble`) with the same "
        "labels; null for no distillation.",
    )
    temperature: float = Field(
        2.0, gt=0, description="Softens teacher and student probabilities in the distillation term (T)."
    )
    alpha: float = Field(
        0.5, ge=0, le=1,
        description="Loss = alpha x cross-entropy with the labels + (1 - alpha) x T^2 x KL(teacher || student).",
    )


def distill_problems(distill: Distill) -> list[Problem]:
    """Distillation settings without a teacher have nothing to act on."""
    if distill.teacher is not None:
        return []
    default = Distill()
    return [Problem(f"distill.{key}", "only applies with distill.teacher")
            for key in ("temperature", "alpha") if getattr(distill, key) != getattr(default, key)]
