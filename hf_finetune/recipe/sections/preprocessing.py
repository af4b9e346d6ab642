"""`preprocessing`: text input preprocessing (images take theirs from the backbone's pretrained config)."""

from __future__ import annotations

from pydantic import Field

from hf_finetune.recipe.sections.base import Section


class Preprocessing(Section):
    max_length: int | None = Field(
        None, gt=0, description="Truncate texts to this many tokens (default and cap: the tokenizer's limit)."
    )
