"""The recipe: schema, YAML + overrides, cross-field checks, the fields reference.

    schema       every section and key: type, default, description (pydantic)
    loading      YAML file -> dotted overrides -> validation
    validation   all problems at once, each with its dotted key path
    reference    the fields table (`hf-finetune fields`, README)
"""

from hf_finetune.recipe.loading import apply_overrides, load_recipe, read_yaml
from hf_finetune.recipe.reference import field_reference, markdown_reference
from hf_finetune.recipe.schema import (
    FILE_FORMATS,
    Augmentation,
    DataSpec,
    Finetune,
    ModelSpec,
    Recipe,
)
from hf_finetune.recipe.validation import validate_recipe

__all__ = [
    "FILE_FORMATS", "Augmentation", "DataSpec", "Finetune", "ModelSpec", "Recipe", "apply_overrides",
    "field_reference", "load_recipe", "markdown_reference", "read_yaml", "validate_recipe",
]
