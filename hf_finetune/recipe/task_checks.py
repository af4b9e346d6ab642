"""The checks of one task's own recipe keys against the data and metrics sections (recipe/cross.py calls
the data ones from task_data_problems, recipe/validation.py the metrics ones): token tags, label sets,
regression targets, segmentation masks. Pure recipe checks: no task-layer import."""

from __future__ import annotations

from pathlib import Path

from hf_finetune.errors import Problem, did_you_mean
from hf_finetune.recipe.schema import MULTI_LABEL_TASKS, REGRESSION_TASKS
from hf_finetune.recipe.sections.data import DataSpec
from hf_finetune.recipe.sections.metrics import (
    ENTITY_METRICS,
    MULTI_LABEL_METRICS,
    REGRESSION_METRICS,
    SEGMENTATION_METRICS,
)
from hf_finetune.recipe.sections.preprocessing import Preprocessing


def multi_label_data_problems(task: str | None, data: DataSpec) -> list[Problem]:
    """data.columns.labels and data.label_separator: multi-label keys, one way of giving label sets at a time."""
    cols = data.columns
    if task not in MULTI_LABEL_TASKS:
        return [Problem(key, f"only applies to tasks: {', '.join(sorted(MULTI_LABEL_TASKS))}")
                for key, value in (("data.columns.labels", cols.labels), ("data.label_separator", data.label_separator))
                if value is not None and task is not None]
    problems = []
    if cols.labels is not None:
        if "label" in cols.model_fields_set:
            problems.append(Problem("data.columns.labels", "one 0/1 column per label replaces data.columns.label; "
                                                           "set one of the two"))
        if data.label_separator is not None:
            problems.append(Problem("data.label_separator", "splits a string label column; data.columns.labels "
                                                            "gives one 0/1 column per label instead"))
        if data.label_names is not None:
            problems.append(Problem("data.label_names", "the names of data.columns.labels are the labels"))
        repeated = sorted({c for c in cols.labels if cols.labels.count(c) > 1})
        if repeated:
            problems.append(Problem("data.columns.labels", f"names column '{repeated[0]}' twice"))
    if data.image_folder is not None:
        problems.append(Problem("data.image_folder", "a folder per class gives one label per image; give label sets "
                                                     "in a csv/json of image paths and labels (data.files)"))
    return problems


def token_keys_problems(data: DataSpec, prep: Preprocessing | None) -> list[Problem]:
    """Keys that only token-classification reads, set on another task."""
    problems = [Problem(f"data.columns.{key}", "only applies to task: token-classification")
                for key in ("tokens", "tags") if getattr(data.columns, key) is not None]
    if data.tag_scheme != DataSpec.model_fields["tag_scheme"].default:
        problems.append(Problem("data.tag_scheme", "only applies to task: token-classification"))
    for key in ("label_all_tokens", "stride"):
        if prep is not None and key in prep.model_fields_set:
            problems.append(Problem(f"preprocessing.{key}", "only applies to task: token-classification"))
    return problems


def token_data_problems(data: DataSpec, prep: Preprocessing | None) -> list[Problem]:
    """token-classification reads words and their tags: the other tasks' columns and image keys do not apply."""
    cols = data.columns
    problems = [Problem(f"data.columns.{key}", "only applies to task: text-classification")
                for key in ("text", "text_pair") if getattr(cols, key) is not None]
    if cols.image is not None:
        problems.append(Problem("data.columns.image", "only applies to task: image-classification"))
    if "label" in cols.model_fields_set:
        problems.append(Problem("data.columns.label", "token-classification reads each word's tag from "
                                                      "data.columns.tags, not a label column"))
    if cols.tokens == cols.tags:
        problems.append(Problem("data.columns.tags", "must differ from data.columns.tokens"))
    for key in ("bad_images", "verify_images", "image_folder"):
        if getattr(data, key) != DataSpec.model_fields[key].default:
            problems.append(Problem(f"data.{key}", "only applies to task: image-classification"))
    if prep is not None and prep.max_length is not None and prep.stride is not None \
            and 2 * prep.stride >= prep.max_length:
        problems.append(Problem("preprocessing.stride", f"{prep.stride} tokens shared by consecutive windows must be "
                                                        f"less than half of preprocessing.max_length ({prep.max_length})"))
    return problems


def target_columns_problems(task: str | None, data: DataSpec) -> list[Problem]:
    """data.columns.targets names the numeric columns of the regression tasks only; distinct, no input column."""
    cols = data.columns
    if task not in REGRESSION_TASKS:
        if cols.targets is not None:
            return [Problem("data.columns.targets", f"only applies to tasks: {', '.join(REGRESSION_TASKS)} "
                                                    "(numeric targets)")]
        return []
    problems: list[Problem] = []
    if cols.targets is not None:
        if not cols.targets:
            problems.append(Problem("data.columns.targets", "is empty; name at least one numeric column"))
        if len(set(cols.targets)) != len(cols.targets):
            problems.append(Problem("data.columns.targets", "names a column twice"))
        if cols.label != type(cols).model_fields["label"].default:  # the resolved recipe keeps the default
            problems.append(Problem("data.columns.label", "give the targets in data.columns.targets or one in "
                                                          "data.columns.label, not both"))
    inputs = {cols.text, cols.text_pair, cols.image} - {None}
    for target in cols.targets or [cols.label]:
        if target in inputs:
            problems.append(Problem("data.columns.targets" if cols.targets else "data.columns.label",
                                    f"'{target}' is also an input column"))
    return problems


def regression_metrics_problems(task: str | None, metrics: list[str]) -> list[Problem]:
    """The regression tasks report pearson, spearman, rmse, mae and r2 (computed here, offline)."""
    if task not in REGRESSION_TASKS:
        return []
    return [Problem(f"metrics[{i}]", f"'{name}' does not apply to {task}, which reports "
                                     f"{', '.join(REGRESSION_METRICS)}" + did_you_mean(name, list(REGRESSION_METRICS)))
            for i, name in enumerate(metrics) if name not in REGRESSION_METRICS]


def mask_data_problems(data: DataSpec, prep: Preprocessing | None) -> list[Problem]:
    """semantic-segmentation reads an image and a mask per row: text keys and a label column do not apply."""
    cols = data.columns
    problems = [Problem(f"data.columns.{key}", "only applies to task: text-classification")
                for key in ("text", "text_pair") if getattr(cols, key) is not None]
    if "label" in cols.model_fields_set:
        problems.append(Problem("data.columns.label", "semantic-segmentation reads each pixel's class from "
                                                      "data.columns.mask, not a label column"))
    if cols.image == cols.mask:
        problems.append(Problem("data.columns.mask", "must differ from data.columns.image"))
    if data.bad_images == "skip":
        problems.append(Problem("data.bad_images", "semantic-segmentation stops at an unreadable image or mask, "
                                                   "naming it (a row without its mask cannot be trained on)"))
    if data.mask_folder is not None and data.image_folder is None:
        problems.append(Problem("data.image_folder", "semantic-segmentation folders come in pairs: give "
                                                     "data.image_folder with data.mask_folder"))
    if data.image_folder is not None and data.mask_folder is None and Path(data.image_folder).is_dir() \
            and not (Path(data.image_folder) / "masks").is_dir():
        problems.append(Problem("data.mask_folder", "semantic-segmentation reads a mask per image: give "
                                                    "data.mask_folder, or a data.image_folder holding images/ "
                                                    "and masks/"))
    if data.mask_folder is not None and not Path(data.mask_folder).is_dir():
        problems.append(Problem("data.mask_folder", f"folder not found: {data.mask_folder}"))
    if data.label_names_file is not None:
        if data.label_names is not None:
            problems.append(Problem("data.label_names_file", "give class names once: data.label_names or this file"))
        elif not Path(data.label_names_file).is_file():
            problems.append(Problem("data.label_names_file", f"file not found: {data.label_names_file}"))
    if prep is not None and prep.max_length is not None:
        problems.append(Problem("preprocessing.max_length", "only applies to text; image size comes from the "
                                                            "backbone's pretrained config"))
    return problems


def token_metrics_problems(task: str | None, metrics: list[str]) -> list[Problem]:
    """token-classification reports entity-level figures and token accuracy: no other metric applies."""
    if task != "token-classification":
        return []
    return [Problem(f"metrics[{i}]", f"'{name}' does not apply to token-classification, which reports entity-level "
                                     f"precision, recall and F1 (seqeval) and token accuracy: metrics may list "
                                     f"{', '.join(ENTITY_METRICS)}" + did_you_mean(name, list(ENTITY_METRICS)))
            for i, name in enumerate(metrics) if name not in ENTITY_METRICS]


def mask_metrics_problems(task: str | None, metrics: list[str]) -> list[Problem]:
    """semantic-segmentation reports mean IoU, pixel accuracy and mean Dice: no other metric applies."""
    if task != "semantic-segmentation":
        return []
    return [Problem(f"metrics[{i}]", f"'{name}' does not apply to semantic-segmentation, which reports "
                                     f"{', '.join(SEGMENTATION_METRICS)} and per-class IoU"
                                     + did_you_mean(name, list(SEGMENTATION_METRICS)))
            for i, name in enumerate(metrics) if name not in SEGMENTATION_METRICS]
def multi_label_metrics_problems(task: str | None, metrics: list[str]) -> list[Problem]:
    """Multi-label runs report their own figures (metrics/multi_label.py): only their names apply."""
    if task not in MULTI_LABEL_TASKS:
        return []
    return [Problem(f"metrics[{i}]", f"'{name}' does not apply to {task}, which reports macro/micro/samples F1, "
                                     f"subset accuracy, Hamming loss and average precision: metrics may list "
                                     f"{', '.join(MULTI_LABEL_METRICS)}" + did_you_mean(name, list(MULTI_LABEL_METRICS)))
            for i, name in enumerate(metrics) if name not in MULTI_LABEL_METRICS]
