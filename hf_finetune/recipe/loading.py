"""Reading a recipe: YAML file (safe loader), then `dotted.key=value` overrides, then validation."""

from __future__ import annotations

import copy
import os
from typing import Any

from pydantic import BaseModel

from hf_finetune.errors import Problem, RecipeError, did_you_mean, is_secret_key
from hf_finetune.recipe.file import read_override_value, read_recipe_file
from hf_finetune.recipe.schema import Recipe, is_free_mapping, section_model
from hf_finetune.recipe.validation import validate_recipe
from hf_finetune.training.fields import training_fields


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a recipe file: YAML's safe loader, bounded (size, nesting, alias expansion), no duplicate keys."""
    return read_recipe_file(path)


def _check_override_path(parts: list[str]) -> str | None:
    """Returns a message when a dotted override path names no recipe key, else None."""
    model: type[BaseModel] = Recipe
    for i, part in enumerate(parts):
        fields = model.model_fields
        here = ".".join(parts[: i + 1])
        if part not in fields:
            return f"{here}: no such recipe key" + did_you_mean(part, fields)
        annotation = fields[part].annotation
        rest = parts[i + 1 :]
        if not rest:
            return None
        if model is Recipe and part == "training":
            key = rest[0]
            if len(rest) > 1:
                return None  # a dict-valued TrainingArguments field (e.g. lr_scheduler_kwargs.x)
            if key not in training_fields():
                return f"{here}.{key}: unknown TrainingArguments field" + did_you_mean(key, training_fields())
            return None
        sub = section_model(annotation)
        if sub is None:
            if is_free_mapping(annotation):
                return None
            return f"{here}: is a value, not a section; set it as {here}=..."
        model = sub
    return None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies `dotted.key=value` overrides; values are parsed as YAML (`3e-5`, `[a, b]`, `null`)."""
    raw = copy.deepcopy(raw)
    problems: list[Problem] = []
    for item in overrides:
        if "=" not in item:
            problems.append(Problem(item, "an override must look like dotted.key=value"))
            continue
        key, _, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            problems.append(Problem(key or item, "an override must look like dotted.key=value"))
            continue
        message = _check_override_path(parts)
        if message:
            shown = f"{key}=***" if any(is_secret_key(p) for p in parts) else item  # never echo a credential
            problems.append(Problem("", f"override '{shown}': {message}"))
            continue
        try:
            value = read_override_value(text, key) if text.strip() else None
        except RecipeError as exc:
            problems += exc.problems
            continue
        _set(raw, parts, value)
    if problems:
        raise RecipeError(problems)
    return raw


def _set(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def apply_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Applies {dotted.key: value} overrides given as Python values (not YAML text), checked like overrides.

    A `__` in a key stands for a dot, so keyword arguments can name nested keys
    (`training__learning_rate=3e-5`).
    """
    raw = copy.deepcopy(raw)
    problems: list[Problem] = []
    for name, value in values.items():
        key = name.replace("__", ".")
        parts = key.split(".")
        message = _check_override_path(parts) if all(parts) else "an override must name a dotted key"
        if message:
            problems.append(Problem("", f"override '{key}': {message}"))
            continue
        _set(raw, parts, value)
    if problems:
        raise RecipeError(problems)
    return raw


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Reads, overrides and validates a recipe file."""
    raw = read_yaml(path)
    try:
        raw = apply_overrides(raw, overrides or [])
    except RecipeError as exc:
        raise RecipeError(exc.problems, str(path)) from None
    return validate_recipe(raw, str(path), overrides)
