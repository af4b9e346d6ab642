"""Recipe checks for self-training that span keys: the pool's source, and what it needs from the recipe."""

from __future__ import annotations

import glob
from pathlib import Path

from hf_finetune.errors import Problem
from hf_finetune.recipe.schema import FILE_FORMATS, DataSpec, SelfTraining

SOURCES = ("files", "split", "image_folder")


def self_training_problems(task: str | None, data: DataSpec | None, st: SelfTraining | None,
                           training_given: bool) -> list[Problem]:
    """Problems with `data.unlabeled` and `self_training` together; sections that failed are None.

    Args:
        task: the recipe's task, or None when it is invalid.
        data: the validated data section, or None.
        st: the validated self_training section, or None (absent or invalid).
        training_given: whether the recipe had a self_training section at all.
    """
    problems: list[Problem] = []
    pool = data.unlabeled if data is not None else None
    if training_given and st is not None and data is not None and pool is None:
        problems.append(Problem("data.unlabeled", "required by self_training: give the unlabelled rows "
                                                  "(data.unlabeled.files, .split or .image_folder)"))
    if pool is None:
        return problems
    if not training_given:
        problems.append(Problem("data.unlabeled", "is only used by self-training: add a self_training section "
                                                  "(e.g. self_training: {rounds: 3, threshold: 0.9})"))
    given = [k for k in SOURCES if getattr(pool, k) is not None]
    if not given:
        problems.append(Problem("data.unlabeled", "say where the unlabelled rows are: data.unlabeled.files, "
                                                  "data.unlabeled.split or data.unlabeled.image_folder"))
    elif len(given) > 1:
        problems.append(Problem("data.unlabeled", "give one source, not "
                                + " and ".join(f"data.unlabeled.{k}" for k in given)))
    if pool.files is not None:
        key = "data.unlabeled.files"
        if not pool.files:
            problems.append(Problem(key, "no files given"))
        for p in pool.files:
            if Path(p).suffix.lower() not in FILE_FORMATS:
                problems.append(Problem(key, f"'{p}': unsupported file type; use {', '.join(FILE_FORMATS)}"))
            elif not glob.glob(p):
                problems.append(Problem(key, f"file not found: {p}"))
        if len({FILE_FORMATS.get(Path(p).suffix.lower()) for p in pool.files}) > 1:
            problems.append(Problem(key, "files of the pool must share a format"))
    if pool.image_folder is not None:
        from hf_finetune.tasks import TASKS

        readers = [t.name for t in TASKS.values() if t.inputs.folder_key == "image_folder"]
        if task not in readers:
            problems.append(Problem("data.unlabeled.image_folder", f"only applies to task: {', '.join(readers)}"))
        elif not Path(pool.image_folder).is_dir():
            problems.append(Problem("data.unlabeled.image_folder", f"folder not found: {pool.image_folder}"))
    if pool.split is not None:
        used = {role: name for role in ("train", "validation", "test")
                if (name := getattr(data.splits, role)) is not None}
        clash = [role for role, name in used.items() if name == pool.split]
        if clash:
            problems.append(Problem("data.unlabeled.split", f"'{pool.split}' is also data.splits.{clash[0]}; "
                                                            "the pool must be other rows"))
        if data.files is not None and pool.split not in data.files:
            problems.append(Problem("data.unlabeled.split", f"'{pool.split}' is not a key of data.files "
                                                            f"(keys given: {', '.join(data.files)})"))
    return problems
