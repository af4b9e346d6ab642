"""`card`: model card metadata that the run cannot know by itself."""

from __future__ import annotations

from pydantic import Field, field_validator

from hf_finetune.recipe.sections.base import Section
from hf_finetune.recipe.sections.hub import hub_id


class CardSpec(Section):
    """Model card metadata that the run cannot know by itself."""

    license: str | None = Field(
        None, description="License id for the model card (apache-2.0, mit, other, ...); omitted when unset."
    )
    base_model: str | None = Field(
        None, description="Hub id credited as the base model when model.name is a local folder (default: none)."
    )
    dataset: str | None = Field(
        None, description="Hub dataset id credited in the card when the data is local (default: none)."
    )

    @field_validator("base_model", "dataset")
    @classmethod
    def _valid_hub_ids(cls, value: str | None) -> str | None:
        return hub_id(value)
