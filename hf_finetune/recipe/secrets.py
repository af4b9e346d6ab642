"""Credentials in a recipe: found by key name or by shape at any depth, and taken out unseen."""

from __future__ import annotations

from typing import Any

from hf_finetune.errors import TOKEN_HINT, Problem, is_secret_key, looks_like_token
from hf_finetune.recipe.sections.training import MANAGED_KEYS

SECRET_MESSAGE = f"tokens never go in a recipe: {TOKEN_HINT} (the value is not shown, saved or logged)"


def without_secrets(raw: Any, path: str = "") -> tuple[Any, list[Problem]]:
    """A copy of the raw recipe with credentials taken out (at any depth), and a problem for each.

    A key named like a credential (token, hub_token, password, ...) or a value shaped like a Hugging
    Face token is refused before anything else sees it, so no later message can echo the value.
    """
    problems: list[Problem] = []
    if isinstance(raw, dict):
        clean = {}
        for key, value in raw.items():
            here = f"{path}.{key}" if path else str(key)
            if is_secret_key(key):
                if path == "training" and key in MANAGED_KEYS:
                    clean[key] = "***"  # the training check says where tokens go instead
                else:
                    problems.append(Problem(here, SECRET_MESSAGE))
                continue
            clean[key], inner = without_secrets(value, here)
            problems += inner
        return clean, problems
    if isinstance(raw, list):
        items = []
        for i, value in enumerate(raw):
            item, inner = without_secrets(value, f"{path}[{i}]")
            items.append(item)
            problems += inner
        return items, problems
    if looks_like_token(raw):
        return "***", [Problem(path, "looks like a Hugging Face token; " + SECRET_MESSAGE)]
    return raw, problems
