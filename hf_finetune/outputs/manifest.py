"""run.json, the manifest a finished run writes last: its name, and reading it without any other part of
the output folder (the folder's publishing and the finished-run reader both need it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
ENSEMBLE_FILE = "ensemble.json"  # an ensemble folder's members and weights (hf_finetune.combine.ensemble)


def read_run(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The finished run's manifest, or None when the folder holds no finished run."""
    path = Path(out_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return run if isinstance(run, dict) and run.get("status") == "complete" else None
