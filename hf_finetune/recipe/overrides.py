"""Overrides: `dotted.key=value` from the command line (YAML text), or {dotted.key: value} from Python.

Each key path is checked against the recipe's sections before anything is set; the values are
checked later, with the rest of the recipe, by validation.
"""

from __future__ import annotations

import copy
from typing import Any

from hf_finetune.errors import Problem, RecipeError, is_secret_key
from hf_finetune.recipe.file import read_override_value
from hf_finetune.recipe.schema import key_path_problem


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
        message = key_path_problem(parts)
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
        message = key_path_problem(parts) if all(parts) else "an override must name a dotted key"
        if message:
            problems.append(Problem("", f"override '{key}': {message}"))
            continue
        _set(raw, parts, value)
    if problems:
        raise RecipeError(problems)
    return raw
