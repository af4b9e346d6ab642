"""Atomic file writes: a reader (or a crash) never sees half a file. The one home for them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def write_atomically(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Calls `write(tmp)` on a temporary file beside `path`, then renames it over `path`.

    A failing `write` leaves `path` as it was and removes the temporary file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 text atomically."""
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes JSON atomically (indented, UTF-8; values JSON cannot hold are written as strings)."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    """Writes YAML atomically (safe dumper, keys in their given order)."""
    write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))
