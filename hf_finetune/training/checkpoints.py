"""Trainer checkpoints: which are complete, which one to resume from.

A process killed while saving leaves a checkpoint folder with some files missing or cut short.
`transformers` picks the highest-numbered folder regardless; we check each one and skip (and
remove) the incomplete ones, so a resume always starts from a checkpoint that loads.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
from pathlib import Path

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"  # Trainer writes it last
_STEP = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(folder: str | Path) -> list[Path]:
    """`checkpoint-N` folders, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found)]


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is whole when its header parses and the data it declares is all there."""
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
    except (OSError, struct.error, ValueError):
        return f"{path.name} is cut short or unreadable"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    if path.stat().st_size < 8 + header_len + max(ends, default=0):
        return f"{path.name} is cut short"
    return None


def checkpoint_problem(path: str | Path) -> str | None:
    """None when the checkpoint is complete, else what is missing or broken."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        return f"{STATE_FILE} is missing"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return f"{STATE_FILE} is cut short"
    if not isinstance(state, dict) or "global_step" not in state:
        return f"{STATE_FILE} is not a Trainer state"
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not any(path.glob("pytorch_model*.bin")):
        return "no model weights"
    for file in weights:
        problem = _safetensors_problem(file)
        if problem:
            return problem
    # Optimizer/scheduler files are absent only when the run saved weights alone (save_only_model).
    if (path / "optimizer.pt").exists() != (path / "scheduler.pt").exists():
        return "optimizer or scheduler state is missing"
    return None


def latest_complete_checkpoint(folder: str | Path, remove_incomplete: bool = False) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones are reported (and removed if asked)."""
    for path in reversed(list_checkpoints(folder)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("Skipping incomplete checkpoint %s (%s; interrupted while saving?)", path, problem)
        if remove_incomplete:
            shutil.rmtree(path, ignore_errors=True)
    return None
