"""`output`: where results are written, and whether a path can be a folder to write into (the one check of
every command that writes; nothing is left behind)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import Field

from hf_finetune.errors import Problem, show
from hf_finetune.recipe.sections.base import Section


class OutputSpec(Section):
    dir: str | None = Field(None, description="Output folder (default: outputs/<recipe file name>).")
    overwrite: bool = Field(False, description="Replace a finished run in output.dir instead of refusing.")
    keep_checkpoints: bool = Field(
        False, description="Keep <output.dir>/checkpoints after a successful run (they are only needed to resume)."
    )
    save_adapter: bool = Field(
        False,
        description="finetune.strategy lora: also keep the LoRA adapter in PEFT's layout in <output.dir>/adapter "
        "(the folder itself always holds the merged model).",
    )


def output_dir_problem(out_dir: str, *, writable: bool = False) -> str | None:
    """What stops `out_dir` being a folder to write into, or None: the one check of every command that writes.

    Always: an empty value, a file, a path under a file, a name the system refuses. With `writable`,
    also a folder that cannot be created or written: the folder (or, when it does not exist yet, its
    nearest existing parent) must accept a new entry, which is tried by making a temporary folder
    there and removing it at once (permission bits do not tell: root, immutable folders, /proc).
    Nothing is left behind.
    """
    if not out_dir.strip():
        return "must name a folder (an empty value would write into the current directory)"
    path = Path(out_dir)
    try:
        if path.exists() and not path.is_dir():
            return f"{out_dir} is a file, not a folder"
        nearest = path if path.is_dir() else None
        for parent in path.absolute().parents:
            if nearest is not None:
                break
            if parent.exists():
                if not parent.is_dir():
                    return f"{out_dir} sits under {parent}, which is a file"
                nearest = parent
    except OSError as exc:  # a name too long, a path through something unreadable
        return f"{show(out_dir)} is not a usable folder path ({exc.strerror or exc})"
    if writable and nearest is not None:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".hf-finetune-write-test-", dir=nearest))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if nearest == path:
                return f"cannot write into {out_dir} ({reason}); make it writable or choose another folder"
            return (f"cannot create {out_dir}: {nearest} does not accept new folders ({reason}); choose a folder "
                    "in a writable place")
    return None


def folder_problems(folders: dict[str, str | None], writable: bool) -> list[Problem]:
    """`output_dir_problem` for each {recipe key: folder} given; `writable` where the recipe will write there."""
    problems = []
    for key, folder in folders.items():
        problem = output_dir_problem(folder, writable=writable) if folder is not None else None
        if problem:
            problems.append(Problem(key, problem))
    return problems


def output_problems(output: OutputSpec, writable: bool = False) -> list[Problem]:
    """output.dir must be usable as a folder, and with `writable` (a run that trains) one it can write into;
    what is already in it is the run's guard to judge."""
    return folder_problems({"output.dir": output.dir}, writable)
