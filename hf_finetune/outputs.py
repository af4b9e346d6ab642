"""The output folder: protected when it holds a finished run, written so a crash never fakes one.

Layout of `output.dir`:

    config.json, model.safetensors, tokenizer files   the fine-tuned model (pipeline() loads the folder)
    recipe.yaml                                       the resolved recipe
    metrics.json                                      final validation and test metrics
    run.json                                          written last: marks the run finished, lists its files
    checkpoints/                                      Trainer checkpoints while training (for resuming)

Final files are written into `.staging/` first and moved into place one by one; `run.json` comes
last, so a folder without it never looks like a finished run.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hf_finetune.errors import NotAFinishedRunError, OutputExistsError
from hf_finetune.files import write_json

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
STAGING = ".staging"


def checkpoints_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINTS


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
    run = read_run(out_dir)
    if run is None:
        raise NotAFinishedRunError(f"OUTPUT_DIR: {out_dir} holds no finished run (no complete {RUN_FILE})"
                                   + consequence)
    return FinishedRun(Path(out_dir), run)


def has_checkpoints(out_dir: str | os.PathLike) -> bool:
    ckpt = checkpoints_dir(out_dir)
    return ckpt.is_dir() and any(p.name.startswith("checkpoint-") for p in ckpt.iterdir())


def guard_output_dir(out_dir: str | os.PathLike, overwrite: bool, resume: bool) -> None:
    """Refuses to train into a folder whose finished run or unfinished checkpoints would be lost.

    Raises:
        OutputExistsError: saying how to overwrite, resume or choose another folder.
    """
    out_dir = Path(out_dir)
    if overwrite:
        return
    run = read_run(out_dir)
    if run is not None:
        raise OutputExistsError(
            f"output.dir: {out_dir} holds a finished run (completed {run.get('finished_at', '?')}). "
            "Set output.overwrite=true to replace it, or choose another output.dir."
        )
    if has_checkpoints(out_dir) and not resume:
        raise OutputExistsError(
            f"output.dir: {out_dir} holds checkpoints of an unfinished run. Continue it with --resume "
            "(or training.resume_from_checkpoint=auto), or set output.overwrite=true to start over."
        )


def clear_previous_run(out_dir: str | os.PathLike) -> None:
    """Removes what an earlier run wrote (its listed files and checkpoints), leaving other files alone."""
    out_dir = Path(out_dir)
    path = out_dir / RUN_FILE
    listed: list[str] = []
    if path.is_file():
        try:
            listed = json.loads(path.read_text()).get("files", [])
        except (OSError, json.JSONDecodeError):
            listed = []
    for name in listed:
        target = out_dir / name
        if target.is_file():
            target.unlink()
    for name in (CHECKPOINTS, STAGING, RUN_FILE):
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def staging_dir(out_dir: str | os.PathLike) -> Path:
    path = Path(out_dir) / STAGING
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def record_files(out_dir: str | os.PathLike, names: list[str]) -> None:
    """Adds files written later (an evaluation) to a finished run's list, so push and overwrite see them."""
    path = Path(out_dir) / RUN_FILE
    run = json.loads(path.read_text())
    run["files"] = run.get("files", []) + [n for n in names if n not in run.get("files", [])]
    write_json(path, run)


def publish(staging: Path, out_dir: str | os.PathLike, manifest: dict[str, Any]) -> list[str]:
    """Moves the staged files into `out_dir`, then writes `run.json` listing them (the completion mark)."""
    out_dir = Path(out_dir)
    stale = out_dir / RUN_FILE
    if stale.exists():
        stale.unlink()  # the folder is not a finished run again until the new run.json lands
    files = []
    for src in sorted(staging.rglob("*")):
        if src.is_dir():
            continue
        rel = src.relative_to(staging)
        dst = out_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        files.append(str(rel))
    shutil.rmtree(staging, ignore_errors=True)
    write_json(out_dir / RUN_FILE, {**manifest, "status": "complete", "files": files})
    return files
