"""The base of every recipe section: unknown keys are errors, and a bool or NaN is no number."""

from __future__ import annotations

import math
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


class Section(BaseModel):
    """A recipe section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: Any) -> Any:
        """`true` is no count and NaN no rate: pydantic would take them as 1 and nan."""
        annotation = cls.model_fields[info.field_name].annotation
        args = set(typing.get_args(annotation) or (annotation,))
        if isinstance(value, bool) and args & {int, float} and bool not in args:
            raise ValueError(f"expected a number, got {value!r} (bool)")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        return value
