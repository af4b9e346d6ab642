"""What the tests and the fuzz benchmark share before any Hugging Face import, and a CSV writer.

`isolate_hub()` gives the process a private cache and a Hub endpoint that refuses at once, so no run
can reach (or wait for) the network and the machine's own cache is never touched.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any


def isolate_hub(prefix: str) -> str:
    """Points the Hugging Face libraries at a new private cache and an endpoint that refuses; returns the cache."""
    cache = tempfile.mkdtemp(prefix=prefix)
    os.environ["HF_HOME"] = cache
    os.environ["HF_DATASETS_CACHE"] = os.path.join(cache, "datasets")
    os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.pop("HF_HUB_OFFLINE", None)
    return cache


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as a CSV file with a header (the first row's keys); parent folders are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
