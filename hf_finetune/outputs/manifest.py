"""run.json, the manifest a finished run writes last: its name, reading it without any other part of the
output folder (the folder's publishing and the finished-run reader both need it), and the checksums of
the weights it records."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
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


# --- the weights' checksums: written when a run publishes, checked by every reader (outputs/finished.py) ---

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".onnx.data")


def is_weights(name: str) -> bool:
    """True for the files that hold a model's weights: the ones run.json records a checksum of."""
    return name.endswith(WEIGHT_SUFFIXES)


def file_checksum(path: Path) -> dict[str, Any]:
    """{"bytes": size, "sha256": hex digest}: what run.json's `checksums` holds per weights file (the
    sha256 is also the Hub's LFS object id)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def weights_checksums(folder: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The checksums of the weights files among `names` (paths relative to `folder`)."""
    return {name: file_checksum(folder / name) for name in sorted(names) if is_weights(name)}
