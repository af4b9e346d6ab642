"""`batch`: the batch size stated for the whole run; the split over processes is training/arguments.py's."""

from __future__ import annotations

from pydantic import Field

from hf_finetune.errors import Problem
from hf_finetune.recipe.sections.base import Section


class Batch(Section):
    """Batch size stated for the whole run, independent of how many processes share it."""

    global_size: int | None = Field(
        None, gt=0,
        description="Samples per optimizer step over all processes; per-device batch and gradient accumulation "
        "are derived for the number of processes. Unset: training.per_device_train_batch_size is used as given.",
    )
    max_per_device: int | None = Field(
        None, gt=0,
        description="Largest per-device batch when deriving from global_size "
        "(default: training.per_device_train_batch_size).",
    )


def batch_problems(batch: Batch) -> list[Problem]:
    if batch.max_per_device is not None and batch.global_size is None:
        return [Problem("batch.max_per_device", "only applies with batch.global_size")]
    return []
