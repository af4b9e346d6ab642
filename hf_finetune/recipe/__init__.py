"""The recipe, pure data: its sections, YAML + overrides, checks, the fields reference.

    sections/    one module per section: its schema (type, default, description) and its own checks
    schema       the sections composed into `Recipe`; which dotted keys exist
    cross        the checks (and defaults) that span sections
    validation   all problems at once, each with its dotted key path
    file         the YAML file read with bounds (size, nesting, aliases, duplicate keys)
    overrides    dotted.key=value overrides
    loading      file -> overrides -> validation
    secrets      credentials taken out before anything else sees them
    reference    the fields table (`hf-finetune fields`, README)

It imports nothing from the stages that use it (data, models, training, capabilities): checks that
need a capability's logic live with the capability and are passed to `validate_recipe` as `checks`.
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
