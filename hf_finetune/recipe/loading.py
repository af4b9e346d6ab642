"""Reading a recipe: YAML file (safe loader), then `dotted.key=value` overrides, then validation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hf_finetune.errors import RecipeError
from hf_finetune.recipe.file import read_recipe_file
from hf_finetune.recipe.overrides import apply_overrides, apply_values
from hf_finetune.recipe.schema import Recipe
from hf_finetune.recipe.validation import SectionCheck, validate_recipe

__all__ = ["apply_overrides", "apply_values", "load_recipe", "read_yaml"]


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a recipe file: YAML's safe loader, bounded (size, nesting, alias expansion), no duplicate keys."""
    return read_recipe_file(path)


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None,
                checks: Sequence[SectionCheck] = ()) -> Recipe:
    """Reads, overrides and validates a recipe file.

    Args:
        path: the recipe file.
        overrides: `dotted.key=value` overrides, values as YAML.
        checks: checks that need a capability's logic (hf_finetune.capability_checks.RECIPE_CHECKS), reported
            with the recipe's own problems.

    Raises:
        RecipeError: listing every problem, each with its dotted key path.
    """
    raw = read_yaml(path)
    try:
        raw = apply_overrides(raw, overrides or [])
    except RecipeError as exc:
        raise RecipeError(exc.problems, str(path)) from None
    return validate_recipe(raw, str(path), overrides, checks=checks)
