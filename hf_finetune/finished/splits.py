"""A finished run's splits as it trained on them: the one home for every command that reads its data again.

When the data had no validation split, training carved one from train (`data.seed`,
`data.validation_size`) and run.json keeps a record of it (data/carved.py). Evaluate, ensembles and
soups rebuild those rows here, from the resolved recipe, and check them against
the record: the same rows, or an error saying what changed. Members of an ensemble or a soup that
carved their validation differently are refused with the difference named (a distillation teacher
is checked in training, by data/carved.py's `check_teacher_carve`).

    recorded_carve       run.json's record (None when validation was a split of the data; data/carved.py)
    run_recipe           the resolved recipe (a mapping) set to rebuild the splits as the run had them
    rebuild_splits       the run's splits, preprocessed for a model, checked against the record
    carved_role          which rebuilt role a split name means (`validation`, `train`) for a carved run
    rebuild_eval_split   that role's rows for `evaluate`
    check_same_carve     runs that share one carve, or an error naming the difference
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from hf_finetune.data.carved import (  # noqa: F401  (DifferentCarveError: raised here too)
    DifferentCarveError,
    carve_difference,
    check_rebuilt,
    describe_carve,
    recorded_carve,
)
from hf_finetune.errors import UserError
from hf_finetune.outputs import FinishedRun

logger = logging.getLogger(__name__)


def run_recipe(run: FinishedRun) -> dict[str, Any]:
    """The run's resolved recipe, its validation split set to be carved (null) when the run carved it.

    recipe.yaml of runs from before this record names a `validation` split the data does not have.
    """
    raw = copy.deepcopy(run.recipe)
    if recorded_carve(run) is not None:
        data = raw.setdefault("data", {})
        data["splits"] = {**(data.get("splits") or {}), "validation": None}
    return raw


def carved_role(run: FinishedRun, split: str | None) -> str | None:
    """`validation` or `train` when `split` names a split the run carved (or carved from), else None."""
    carve = recorded_carve(run) if split is not None else None
    if carve is None:
        return None
    if split == "validation":
        return "validation"
    if split == carve.get("from"):
        return "train"
    return None


def rebuild_splits(run: FinishedRun, raw: dict[str, Any], predictor: Any, roles: tuple[str, ...]) -> Any:
    """The run's `roles` splits, rebuilt as training built them, preprocessed for `predictor`'s model.

    Args:
        run: the run whose record the carve is checked against.
        raw: the recipe mapping to rebuild from (from `run_recipe`, possibly edited: caps, columns).
        predictor: the model (its tokenizer and max_length, or its image config) and its labels.
        roles: the roles wanted; the others are skipped where the data stage allows it.

    Returns:
        `PreparedData` (data/__init__.py) of the splits, labelled in the data's label space (the caller
        compares it with the model's).

    Raises:
        CarveMismatchError: the data changed since the run, so the carved rows cannot be rebuilt.
    """
    from hf_finetune.data import build_datasets
    from hf_finetune.recipe import validate_recipe
    from hf_finetune.tasks import get_task

    raw = copy.deepcopy(raw)
    data = raw.setdefault("data", {})
    if "train" not in roles:  # only the label space and the carve need train: one row after carving
        data["max_samples"] = {**(data.get("max_samples") or {}), "train": 1}
    if "test" not in roles:
        data["splits"] = {**(data.get("splits") or {}), "test": None}
    raw["output"] = {"dir": str(run.folder)}
    raw["hub"] = {}
    raw.pop("distill", None)  # a student's teacher is not needed to rebuild its data
    raw.pop("self_training", None)
    data.pop("unlabeled", None)
    recipe = validate_recipe(raw, source=str(run.folder / "recipe.yaml"), purpose="evaluate")
    task = get_task(predictor.task)
    prepared = build_datasets(recipe, task.inputs.finished_encoding(predictor), labeling=task.problem.labeling)
    recorded = recorded_carve(run)
    if recorded is not None and prepared.carved is not None:
        check_rebuilt(recorded, prepared.carved, str(run.folder))
    return prepared


def check_same_carve(runs: list[FinishedRun], what: str = "RUN_DIR", remedy: str | None = None) -> None:
    """Runs scored on one split must have carved their validation alike (or none of them carved).

    A run that carved its validation with another seed or size trained on some of another run's
    validation rows, so its scores there would flatter it.

    Raises:
        DifferentCarveError: naming the two runs and the difference (seed, size, the data).
    """
    first, carve = runs[0], recorded_carve(runs[0])
    remedy = remedy or ("train them with the same data.seed and data.validation_size, or score them on "
                        "labelled data none of them trained on with --data")
    for other in runs[1:]:
        theirs = recorded_carve(other)
        if carve is None and theirs is None:
            continue
        if carve is None or theirs is None:
            carver, named = (other, first) if carve is None else (first, other)
            raise DifferentCarveError(
                f"{what}: {carver.folder} carved its validation from its training data "
                f"({describe_carve(theirs or carve)}) but {named.folder} validated on a split of its data; "
                f"one may have trained on the other's validation rows: {remedy}")
        difference = carve_difference(theirs, carve)
        if difference is not None:
            raise DifferentCarveError(
                f"{what}: {other.folder} carved its validation differently from {first.folder} ({difference}), "
                f"so each trained on some of the other's validation rows: {remedy}")


def rebuild_eval_split(run: FinishedRun, recipe: Any, role: str, predictor: Any) -> Any:
    """One rebuilt split of the run's data (`carved_role`), as `build_eval_dataset` returns a split: role "eval".

    Args:
        recipe: the evaluation recipe (the run's, caps off, columns as given).

    Raises:
        CarveMismatchError: the data changed since the run.
        UserError: the data's labels are not the model's.
    """
    from hf_finetune.data import PreparedData

    prepared = rebuild_splits(run, recipe.to_dict(), predictor, (role,))
    if list(prepared.labels.names) != list(predictor.labels):
        raise UserError(f"the data of {run.folder} has labels {', '.join(prepared.labels.names)} now, but the "
                        f"model predicts {', '.join(predictor.labels)}")
    source = prepared.sources[role]
    logger.info("Scoring the run's %s split as it trained on it: %s", role, source)
    return PreparedData({"eval": prepared.splits[role]}, prepared.labels, prepared.collator, {"eval": source},
                        cache={"eval": prepared.cache[role]} if role in prepared.cache else {},
                        skipped_images={"eval": prepared.skipped_images[role]} if role in prepared.skipped_images
                        else {})
