"""`output`: where results are written, and whether that path can be a folder (nothing is created here)."""

from __future__ import annotations

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


def output_dir_problem(out_dir: str) -> str | None:
    """What is wrong with `output.dir` as a path (empty, a file, under a file), or None; no folder is made."""
    if not out_dir.strip():
        return "must name a folder (an empty value would write into the current directory)"
    path = Path(out_dir)
    try:
        if path.exists() and not path.is_dir():
            return f"{out_dir} is a file, not a folder"
        for parent in path.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    return f"{out_dir} sits under {parent}, which is a file"
                break
    except OSError as exc:  # a name too long, a path through something unreadable
        return f"{show(out_dir)} is not a usable folder path ({exc.strerror or exc})"
    return None


def output_problems(output: OutputSpec) -> list[Problem]:
    """output.dir must be usable as a folder (what is already in it is the run's guard to judge)."""
    problem = output_dir_problem(output.dir) if output.dir is not None else None
    return [Problem("output.dir", problem)] if problem else []
