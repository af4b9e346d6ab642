"""`preprocessing`: text input preprocessing (images take theirs from the backbone's pretrained config);
windows and sub-token labels of token classification."""

from __future__ import annotations

from pydantic import Field

from hf_finetune.recipe.sections.base import Section


class Preprocessing(Section):
    max_length: int | None = Field(
        None, gt=0, description="Truncate texts to this many tokens (default and cap: the tokenizer's limit)."
    )
    label_all_tokens: bool = Field(
        False, description="token-classification: every sub-token of a word carries its tag in the loss (B- becomes "
        "I- after the first); false: only the first sub-token, the others are ignored.",
    )
    stride: int | None = Field(
        None, ge=0, description="token-classification: sub-tokens shared by consecutive windows of a sentence longer "
        "than max_length (default: a quarter of max_length; recorded).",
    )
