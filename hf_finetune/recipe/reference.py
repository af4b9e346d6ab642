"""The recipe reference: every key with its type, default and meaning (`hf-finetune fields`, README)."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel

from hf_finetune.recipe.schema import Recipe, section_model


def _type_name(annotation: Any) -> str:
    text = str(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    text = re.sub(r"hf_finetune\.recipe(?:\.\w+)*\.", "", text)  # a section's own class: its name is enough
    return text.replace("typing.", "").replace("NoneType", "None").replace("Literal", "one of ")


def field_reference() -> list[tuple[str, str, str, str]]:
    """Rows of (dotted key, type, default, description) for every recipe key, for docs and `fields`."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}"
            sub = section_model(field.annotation)
            if sub is not None:
                walk(sub, path + ".")
                continue
            if field.is_required():
                default = "required"
            elif field.default_factory is not None:
                default = repr(field.default_factory())
            else:
                default = repr(field.default)
            rows.append((path, _type_name(field.annotation), default, field.description or ""))

    walk(Recipe, "")
    return rows


def markdown_reference() -> str:
    """The recipe reference table of README.md (a test keeps the two identical)."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, type_name, default, description in field_reference():
        cells = [f"`{key}`", type_name, f"`{default}`" if default != "required" else "required", description]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
