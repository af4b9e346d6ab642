"""Reading a finished run's output folder: the one reader predict, evaluate, push and the card use."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hf_finetune.errors import NotAFinishedRunError
from hf_finetune.outputs.folder import recover_interrupted_publish
from hf_finetune.outputs.manifest import ENSEMBLE_FILE, RUN_FILE, read_run


@dataclass
class FinishedRun:
    """A finished run's output folder, as predict, evaluate, push and the card read it."""

    folder: Path
    manifest: dict[str, Any]  # run.json

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @functools.cached_property
    def recipe(self) -> dict[str, Any]:
        """The resolved recipe the run saved (recipe.yaml), as a plain mapping."""
        return _read_mapping(self.folder / "recipe.yaml", yaml.safe_load)

    @functools.cached_property
    def metrics(self) -> dict[str, Any]:
        """The run's metrics.json: validation, test and train figures."""
        return _read_mapping(self.folder / "metrics.json", json.loads)

    @property
    def kind(self) -> str:
        """`run` (trained), `soup` (weight-averaged runs: a plain model folder) or `ensemble` (no model
        of its own: its members' probabilities are averaged)."""
        return str(self.manifest.get("kind", "run"))

    @property
    def is_ensemble(self) -> bool:
        return self.kind == "ensemble"

    @functools.cached_property
    def ensemble(self) -> dict[str, Any]:
        """An ensemble folder's ensemble.json: method, members (folder inside this one, weight), labels."""
        if not self.is_ensemble:
            raise NotAFinishedRunError(f"OUTPUT_DIR: {self.folder} is a {self.kind}, not an ensemble")
        return _read_mapping(self.folder / ENSEMBLE_FILE, json.loads)

    def member_folders(self) -> list[Path]:
        """An ensemble's member run folders (copies inside the ensemble folder), in order."""
        members = self.ensemble.get("members")
        if not isinstance(members, list) or not members:
            raise NotAFinishedRunError(f"OUTPUT_DIR: {self.folder / ENSEMBLE_FILE} lists no members; the folder "
                                       "is damaged")
        return [self.folder / str(m["folder"]) for m in members]


def _read_mapping(path: Path, parse: Any) -> dict[str, Any]:
    try:
        value = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise NotAFinishedRunError(f"OUTPUT_DIR: cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise NotAFinishedRunError(f"OUTPUT_DIR: {path} is not a mapping; the folder is damaged")
    return value


def read_finished_run(out_dir: str | os.PathLike, consequence: str = "") -> FinishedRun:
    """The finished run in `out_dir`.

    Args:
        out_dir: the output folder.
        consequence: appended to the error (e.g. ": nothing to push").

    Raises:
        NotAFinishedRunError: the folder holds no finished run of this tool (no complete run.json).
    """
    recover_interrupted_publish(Path(out_dir))
    run = read_run(out_dir)
    if run is None:
        raise NotAFinishedRunError(f"OUTPUT_DIR: {out_dir} holds no finished run (no complete {RUN_FILE})"
                                   + consequence)
    return FinishedRun(Path(out_dir), run)
