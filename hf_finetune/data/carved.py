"""A validation split carved from train, and the record that lets a finished run's commands rebuild it.

Training carves validation from train when the data has none (`data.validation_size`, `data.seed`).
Every command that reads a finished run's data again (evaluate, ensembles and soups, distillation)
must score the same rows, so the run keeps in run.json (`splits.validation.carved`) what it carved
from and a fingerprint of the rows:

    from         the split carved from (data.splits.train)
    seed, size   data.seed and data.validation_size
    from_rows    rows of that split before carving
    rows         rows carved out
    train_fingerprint, fingerprint   the rows before carving, and the carved rows (inputs + label names)

A rebuild compares its own record with the run's and says what changed (rows added or edited, or the
same rows carved differently) instead of silently scoring other rows. finished/splits.py rebuilds a
run's splits for the commands; `check_teacher_carve` is the distillation teacher's check in training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from datasets import Dataset

from hf_finetune.data.labels import LABEL_COLUMN
from hf_finetune.data.splits import carve_validation
from hf_finetune.errors import DataError
from hf_finetune.recipe import DataSpec

logger = logging.getLogger(__name__)

BATCH = 4096  # rows hashed per batch


class CarveMismatchError(DataError):
    """The carved validation cannot be rebuilt as the run had it (the data changed), named precisely."""


class DifferentCarveError(DataError):
    """Runs to be scored together whose validation rows were carved differently, the difference named."""


def carve(train: Dataset, data: DataSpec, stratify: bool = True) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """Carves validation from `train` (labels encoded) and describes the carve for run.json (`stratify`:
    by class where the classes allow it; tagged sentences are drawn plainly).

    Returns:
        (train without the carved rows, the carved validation rows, the record).
    """
    rest, validation = carve_validation(train, data.validation_size, data.seed, stratify=stratify)
    columns = fingerprint_columns(data)
    record = {
        "from": data.splits.train,
        "seed": data.seed,
        "size": data.validation_size,
        "from_rows": len(train),
        "rows": len(validation),
        "train_fingerprint": rows_fingerprint(train, columns),
        "fingerprint": rows_fingerprint(validation, columns),
    }
    return rest, validation, record


def fingerprint_columns(data: DataSpec) -> list[str]:
    """The columns that identify a row: the inputs the recipe names (whatever the task), then the label."""
    named = data.columns.model_dump()
    return [column for key, column in named.items() if key != "label" and column is not None] + [LABEL_COLUMN]


def rows_fingerprint(ds: Dataset, columns: list[str]) -> str:
    """A hash of the rows' inputs and label names, in order.

    Images are hashed by their bytes when the dataset holds them, else by file name and size (reading
    every file again would cost a pass over the images): moving the image folder keeps the fingerprint.
    """
    present = [c for c in columns if c in ds.column_names]
    feature = ds.features.get(LABEL_COLUMN)
    names = getattr(feature, "names", None)
    digest = hashlib.sha256()
    view = ds.select_columns(present)
    for batch in view.iter(batch_size=BATCH):
        for column in present:
            values = batch[column]
            if column == LABEL_COLUMN and names:
                values = [names[v] for v in values]
            for value in values:
                _update(digest, value)
    return digest.hexdigest()[:32]


def _update(digest: Any, value: Any) -> None:
    if isinstance(value, str):  # the common case, kept cheap: about 1 s per million short texts
        digest.update(b"s%d:" % len(value))
        digest.update(value.encode("utf-8", "surrogatepass"))
        return
    if isinstance(value, dict) and ("bytes" in value or "path" in value):  # an undecoded image cell
        if value.get("bytes") is not None:
            digest.update(b"B%d:" % len(value["bytes"]))
            digest.update(value["bytes"])
            return
        path = value.get("path") or ""
        try:
            size = os.stat(path).st_size
        except OSError:
            size = -1
        digest.update(f"P{os.path.basename(path)}:{size}\x00".encode())
        return
    if isinstance(value, bytes):
        digest.update(b"b%d:" % len(value))
        digest.update(value)
        return
    digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    digest.update(b"\x00")


def describe_carve(record: dict[str, Any]) -> str:
    """`5 rows carved from split 'train' (seed 42, validation_size 0.1)`."""
    return (f"{record.get('rows', '?')} rows carved from split '{record.get('from', 'train')}' "
            f"(data.seed {record.get('seed')}, data.validation_size {record.get('size')})")


def carve_difference(theirs: dict[str, Any], ours: dict[str, Any]) -> str | None:
    """What differs between two carves of validation, in words; None when they carved the same rows.

    Records of runs from before fingerprints hold the settings alone, which are then all that is compared.
    """
    def known(key: str) -> bool:
        return theirs.get(key) is not None and ours.get(key) is not None

    if known("fingerprint") and theirs["fingerprint"] == ours["fingerprint"]:
        return None
    settings = [f"data.{key} {theirs.get(name)} vs {ours.get(name)}"
                for key, name in (("splits.train", "from"), ("seed", "seed"), ("validation_size", "size"))
                if theirs.get(name) != ours.get(name)]
    if settings:
        return ", ".join(settings)
    if known("from_rows") and theirs["from_rows"] != ours["from_rows"]:
        return (f"split '{ours.get('from')}' had {theirs['from_rows']} rows vs {ours['from_rows']} "
                "when validation was carved from it")
    if known("train_fingerprint") and theirs["train_fingerprint"] != ours["train_fingerprint"]:
        return (f"split '{ours.get('from')}' held other rows (the same count, {ours.get('from_rows')}; "
                "their fingerprints differ)")
    if not known("fingerprint"):
        return None
    return "the same rows and settings carved into other validation rows (another `datasets` version?)"


def check_rebuilt(recorded: dict[str, Any], rebuilt: dict[str, Any], where: str) -> None:
    """The rebuilt carve must be the one the run recorded.

    Args:
        recorded: run.json's `splits.validation.carved`.
        rebuilt: the record of the carve just made from the run's resolved recipe.
        where: the run folder, for the message.

    Raises:
        CarveMismatchError: saying what changed and what to do instead.
    """
    if not recorded.get("fingerprint") or carve_difference(recorded, rebuilt) is None:
        return
    source = f"split '{rebuilt.get('from')}'"
    if any(recorded.get(k) != rebuilt.get(k) for k in ("from", "seed", "size")):
        what = f"the carving settings differ from run.json's: {carve_difference(recorded, rebuilt)}"
    elif recorded.get("from_rows") != rebuilt.get("from_rows"):
        what = (f"{source} has {rebuilt.get('from_rows')} rows now, {recorded.get('from_rows')} when the run "
                "carved validation from it")
    elif recorded.get("train_fingerprint") != rebuilt.get("train_fingerprint"):
        what = f"{source} holds other rows now (the same count, {rebuilt.get('from_rows')}, other content)"
    else:
        what = (f"{source} holds the same rows, but carving them gave other validation rows "
                "(a different `datasets` version? run.json's `versions` has the run's)")
    raise CarveMismatchError(
        f"the validation split of {where} was carved from its training data ({describe_carve(recorded)}), and "
        f"those rows cannot be rebuilt: the data changed since the run ({what}; fingerprint "
        f"{rebuilt.get('fingerprint')}, run.json has {recorded.get('fingerprint')}). Score on data you name "
        "(--data), or restore the data the run trained on")


def recorded_carve(run: Any) -> dict[str, Any] | None:
    """How `run` (a finished run, outputs/finished.py) carved its validation split, or None when the data had one.

    Runs from before fingerprints were recorded give their settings only (from recipe.yaml); an
    ensemble that kept no record gives its first member's.
    """
    splits = run.manifest.get("splits")
    if splits is None and run.is_ensemble:
        from hf_finetune.outputs import read_finished_run

        return recorded_carve(read_finished_run(run.member_folders()[0]))
    entry = (splits or {}).get("validation") or {}
    if isinstance(entry.get("carved"), dict):
        return entry["carved"]
    if "carved" in str(entry.get("source", "")):  # an older run: its settings, no fingerprint to check
        data = run.recipe.get("data") or {}
        return {"from": (data.get("splits") or {}).get("train") or "train", "seed": data.get("seed", 42),
                "size": data.get("validation_size", 0.1), "rows": entry.get("rows")}
    return None


def check_teacher_carve(teacher: str, student: dict[str, Any] | None, data: Any) -> None:
    """A distillation teacher that carved its validation from the student's training rows must have carved
    the same rows: otherwise it trained on some of the student's validation rows, and the student,
    learning its probabilities, would score too well there (and be selected on that).

    Args:
        teacher: the teacher folder (a run, a soup or an ensemble, whose members are each checked).
        student: the student's carve record (`PreparedData.carved`), None when its data has a validation split.
        data: the student's data section, to tell the same training data for records without fingerprints.

    Raises:
        DifferentCarveError: naming the teacher, the difference and the settings that match it.
    """
    if student is None:
        return
    from hf_finetune.outputs import read_finished_run

    run = read_finished_run(teacher)
    runs = [read_finished_run(folder) for folder in run.member_folders()] if run.is_ensemble else [run]
    for member in runs:
        theirs = recorded_carve(member)
        if theirs is None:
            continue
        if theirs.get("train_fingerprint") is not None:
            same_rows = theirs["train_fingerprint"] == student.get("train_fingerprint")
        else:  # a record from before fingerprints: the same data source is the best evidence there is
            same_rows = all((member.recipe.get("data") or {}).get(key) == getattr(data, key)
                            for key in ("dataset", "config", "files", "image_folder"))
        difference = carve_difference(theirs, student) if same_rows else None
        if difference is not None:
            raise DifferentCarveError(
                f"distill.teacher: {member.folder} carved its validation from the same training rows as this "
                f"recipe, differently ({difference}; teacher vs this recipe), so it trained on some of this run's "
                f"validation rows and the student would score too well there: set data.seed: {theirs.get('seed')} "
                f"and data.validation_size: {theirs.get('size')} as the teacher's recipe.yaml has them, or give "
                "the data a validation split")
