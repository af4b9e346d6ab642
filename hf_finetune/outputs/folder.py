"""What may be written into an output folder, and how a run is published there without losing the last one.

Publishing: the new run's files wait in `.staging/`. When an earlier finished run is being replaced,
its run.json and listed files move into `.previous/` first; then the new files move into place and
the new run.json (status complete) lands last, and `.previous/` is removed. A process killed in
between leaves `.previous/` behind, and the next command on the folder puts the old run back
(`recover_interrupted_publish`), so an overwrite that does not finish leaves the old run as it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from hf_finetune.errors import OutputExistsError, OutputNotWritableError
from hf_finetune.files import write_json
from hf_finetune.outputs.lock import LOCK_FILE
from hf_finetune.outputs.manifest import RUN_FILE, is_weights, read_run, weights_checksums
from hf_finetune.recipe.sections.output import output_dir_problem

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
NEXT_CHECKPOINTS = ".next-checkpoints"  # an overwriting run's checkpoints: the old run keeps its own until then
STAGING = ".staging"
PREVIOUS = ".previous"
TOOL_ENTRIES = {RUN_FILE, CHECKPOINTS, NEXT_CHECKPOINTS, STAGING, PREVIOUS, LOCK_FILE,
                "tensorboard"}  # training.report_to: tensorboard (hf_finetune.training.tracking)


def checkpoints_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Where the Trainer writes checkpoints: `checkpoints/`, or `.next-checkpoints/` while overwriting."""
    return Path(out_dir) / (NEXT_CHECKPOINTS if overwrite else CHECKPOINTS)


def check_writable_dir(path: str | os.PathLike, key: str) -> Path:
    """Refuses a folder that `output_dir_problem(writable=True)` finds fault with; nothing is made.

    Raises:
        OutputNotWritableError: starting with `key` (the recipe key or option that names the folder).
    """
    problem = output_dir_problem(str(path), writable=True)
    if problem:
        raise OutputNotWritableError(f"{key}: {problem}")
    return Path(path)


def make_output_dir(path: str | os.PathLike, key: str) -> Path:
    """Checks a folder to write into (`check_writable_dir`) and creates it.

    Raises:
        OutputNotWritableError: starting with `key`, saying why the folder cannot be used.
    """
    path = check_writable_dir(path, key)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a race with another process, a disk that filled up meanwhile
        raise OutputNotWritableError(f"{key}: cannot create {path}: {exc.strerror or exc}") from None
    return path


PREDICTION_FORMATS = (".jsonl", ".csv")  # what `predict --output` writes


def prediction_file(path: str | os.PathLike) -> Path:
    """Checks `predict --output`: a .jsonl or .csv file name, not a folder, in a folder that can be written
    (created here).

    Raises:
        UserError: the name ends in neither .jsonl nor .csv, or names a folder; OutputNotWritableError.
    """
    from hf_finetune.errors import UserError

    path = Path(path)
    if path.suffix.lower() not in PREDICTION_FORMATS:
        raise UserError(f"--output: {path}: write .jsonl or .csv")
    make_output_dir(path.parent, "--output")  # a parent that is a file, no permission
    if path.is_dir():
        raise UserError(f"--output: {path} is a folder; name a .jsonl or .csv file")
    return path


def _listed_files(out_dir: Path) -> set[str]:
    """Top-level names that a run.json in the folder (finished or being published) says are ours."""
    try:
        run = json.loads((out_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return set()
    files = run.get("files", []) if isinstance(run, dict) else []
    return {str(name).split("/")[0] for name in files if isinstance(name, str)}


def has_checkpoints(out_dir: str | os.PathLike) -> bool:
    ckpt = checkpoints_dir(out_dir)
    return ckpt.is_dir() and any(p.name.startswith("checkpoint-") for p in ckpt.iterdir())


def guard_output_dir(out_dir: str | os.PathLike, overwrite: bool, resume: bool) -> None:
    """Refuses a folder where training would lose or mix up work (`output_dir_refusal`), after putting
    back a finished run that an interrupted overwrite had moved aside.

    Raises:
        OutputExistsError: saying how to overwrite, resume or choose another folder.
    """
    out_dir = Path(out_dir)
    if output_dir_problem(str(out_dir)) is None and out_dir.is_dir():
        recover_interrupted_publish(out_dir)
    refusal = output_dir_refusal(out_dir, overwrite, resume)
    if refusal:
        raise OutputExistsError(refusal)


def output_dir_refusal(out_dir: str | os.PathLike, overwrite: bool, resume: bool) -> str | None:
    """Why a run may not write into `out_dir` (read only: what `guard_output_dir` and `check` refuse), or None.

    Refused: a path that is a file or under one; a folder holding files this tool did not write
    (the current directory, a source tree); a finished run unless overwriting; an unfinished run's
    checkpoints unless resuming or overwriting.
    """
    out_dir = Path(out_dir)
    problem = output_dir_problem(str(out_dir))
    if problem:
        return f"output.dir: {problem}"
    if not out_dir.is_dir():
        return None
    run = read_run(out_dir)
    if run is None:
        foreign = sorted(name for name in os.listdir(out_dir) if name not in TOOL_ENTRIES | _listed_files(out_dir))
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            return (f"output.dir: {out_dir} holds files that hf-finetune did not write ({shown}); a run would mix "
                    "its files with them. Choose a new or empty folder (e.g. outputs/my-run).")
    if overwrite:
        return None
    if run is not None:
        return (f"output.dir: {out_dir} holds a finished run (completed {run.get('finished_at', '?')}). "
                "Set output.overwrite=true to replace it, or choose another output.dir.")
    if has_checkpoints(out_dir) and not resume:
        return (f"output.dir: {out_dir} holds checkpoints of an unfinished run. Continue it with --resume "
                "(or training.resume_from_checkpoint=auto), or set output.overwrite=true to start over.")
    return None


def prepare_output_dir(out_dir: str | os.PathLike, overwrite: bool, key: str = "output.dir") -> None:
    """Creates the folder; an overwriting run starts without the checkpoints of an earlier, killed overwrite."""
    out_dir = make_output_dir(out_dir, key)
    if overwrite:
        shutil.rmtree(out_dir / NEXT_CHECKPOINTS, ignore_errors=True)


def staging_dir(out_dir: str | os.PathLike) -> Path:
    path = Path(out_dir) / STAGING
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def record_files(out_dir: str | os.PathLike, names: list[str], forget: list[str] | None = None) -> None:
    """Adds files written later (an evaluation) to a finished run's list, so push and overwrite see them.

    `forget`: entries to drop first, for files the later step removed (a re-export without its
    external-data file), so the list never names a file that is not there.
    """
    path = Path(out_dir) / RUN_FILE
    run = json.loads(path.read_text(encoding="utf-8"))
    dropped = set(forget or ()) | set(names)
    kept = [n for n in run.get("files", []) if n not in set(forget or ())]
    run["files"] = kept + [n for n in names if n not in kept]
    checksums = {n: c for n, c in (run.get("checksums") or {}).items() if n not in dropped}
    run["checksums"] = {**checksums, **weights_checksums(Path(out_dir), [n for n in names if is_weights(n)])}
    write_json(path, run)


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def publish(staging: Path, out_dir: str | os.PathLike, manifest: dict[str, Any]) -> list[str]:
    """Moves the staged files into `out_dir` in place of any earlier finished run; run.json lands last."""
    out_dir = Path(out_dir)
    recover_interrupted_publish(out_dir)
    files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if not p.is_dir())
    # Sizes and sha256 of the weights: every command that reads the run checks them (outputs/finished.py).
    manifest = {**manifest, "checksums": weights_checksums(staging, files)}
    previous = out_dir / PREVIOUS
    old = read_run(out_dir)
    if old is not None:
        # From the first move on, the folder is no finished run; recovery restores the old one from here.
        previous.mkdir()
        _move(out_dir / RUN_FILE, previous / RUN_FILE)
        for name in old.get("files", []):
            if (out_dir / name).is_file():
                _move(out_dir / name, previous / name)
    # Lists the files before they arrive, so a folder left half-published is known to be ours.
    write_json(out_dir / RUN_FILE, {**manifest, "status": "publishing", "files": files})
    for name in files:
        _move(staging / name, out_dir / name)
    write_json(out_dir / RUN_FILE, {**manifest, "status": "complete", "files": files})
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return files


def recover_interrupted_publish(out_dir: Path) -> None:
    """Puts back the finished run that a killed overwrite had moved aside, or clears what is left of it."""
    previous = out_dir / PREVIOUS
    if not previous.is_dir():
        return
    if read_run(out_dir) is None and (previous / RUN_FILE).is_file():
        for name in _listed_files(out_dir):  # the new run's half-published files
            target = out_dir / name
            if target.is_file() and not (previous / name).exists():
                target.unlink()
        for src in sorted(previous.rglob("*")):
            if src.is_file() and src != previous / RUN_FILE:
                _move(src, out_dir / src.relative_to(previous))
        _move(previous / RUN_FILE, out_dir / RUN_FILE)
        logger.warning("%s: an overwrite was interrupted while publishing; the previous finished run is back",
                       out_dir)
    shutil.rmtree(previous, ignore_errors=True)


def settle_checkpoints(out_dir: str | os.PathLike, overwrite: bool, keep: bool) -> None:
    """After publishing: the new run's checkpoints replace the old ones when kept, else all go."""
    out_dir = Path(out_dir)
    if overwrite:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)  # the replaced run's
        if keep and (out_dir / NEXT_CHECKPOINTS).is_dir():
            os.replace(out_dir / NEXT_CHECKPOINTS, out_dir / CHECKPOINTS)
        shutil.rmtree(out_dir / NEXT_CHECKPOINTS, ignore_errors=True)
    elif not keep:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
