"""The `training` section's fields: moved to hf_finetune/recipe/sections/training.py (the recipe checks them
against the installed transformers without importing the training stage); the names stay importable here."""

from hf_finetune.recipe.sections.training import (  # noqa: F401
    MANAGED_KEYS,
    RANGES,
    check_training_section,
    training_defaults,
    training_fields,
    value_problem,
)
