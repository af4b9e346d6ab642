"""Checks and defaults that span sections: the one place for them.

Each takes the sections it reads, already validated; a section that failed validation is passed as
None and its checks are skipped. The checks that need only one section live with it in
recipe/sections/; checks that need a capability's own logic are given to `validate_recipe` by the
entry points (hf_finetune/capability_checks.py).
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hf_finetune.errors import Problem, RecipeError, did_you_mean, show
from hf_finetune.recipe.overrides import apply_values
from hf_finetune.recipe.schema import MULTI_LABEL_TASKS, REGRESSION_TASKS, TASK_INPUTS, key_path_problem
from hf_finetune.recipe.sections.augmentation import Augmentation
from hf_finetune.recipe.sections.batch import Batch
from hf_finetune.recipe.sections.data import FILE_FORMATS, DataSpec
from hf_finetune.recipe.sections.distill import Distill
from hf_finetune.recipe.sections.finetune import Finetune
from hf_finetune.recipe.sections.metrics import (
    BUNDLED_METRICS,
    ENTITY_METRICS,
    LOWER_IS_BETTER,
    REGRESSION_METRICS,
    SEGMENTATION_METRICS,
    metric_keys,
)
from hf_finetune.recipe.sections.model import ModelSpec
from hf_finetune.recipe.sections.output import OutputSpec
from hf_finetune.recipe.sections.preprocessing import Preprocessing
from hf_finetune.recipe.sections.search import OWNED_BY_SEARCH, SearchSpec
from hf_finetune.recipe.sections.self_training import SelfTraining
from hf_finetune.recipe.sections.training import house_defaults, installed_default
from hf_finetune.recipe.streaming import stream_training_defaults
from hf_finetune.recipe.task_checks import (
    mask_data_problems,
    multi_label_data_problems,
    target_columns_problems,
    token_data_problems,
    token_keys_problems,
)

# --- defaults that depend on the task and other sections ---------------------------------------------------


def resolve_data(task: str, data: DataSpec) -> None:
    cols = data.columns
    kind = TASK_INPUTS.get(task)
    if kind == "text" and cols.text is None:
        cols.text = "text"
    if task == "token-classification":
        cols.tokens = cols.tokens or "tokens"
        cols.tags = cols.tags or "tags"
    if kind == "image" and cols.image is None:
        cols.image = "image"
    if task == "semantic-segmentation":
        cols.image = cols.image or "image"
        cols.mask = cols.mask or "mask"


def resolve_training(data: DataSpec | None, user: dict[str, Any], metrics: list[str] | None,
                     augmentation: Augmentation | None = None, task: str | None = None) -> dict[str, Any]:
    """House defaults under the user's `training` values, plus the model-selection metric.

    Inputs vary in length when the recipe reads text (data.columns.text, resolved from the task), so the
    recipe decides the length-grouped default from its own data section, without asking the task layer.
    """
    varied = data is not None and (data.columns.text is not None or data.columns.tokens is not None)
    streaming = data is not None and data.streaming
    # a stream is read in order: no length-grouped sampler; its evaluations and checkpoints count steps
    training = house_defaults(varied and not streaming, mixes=augmentation is not None and augmentation.mixes)
    if streaming:
        training.update(stream_training_defaults())
    training.update(user)
    if training.get("load_best_model_at_end") and training.get("metric_for_best_model") is None:
        # Select on the first metric the recipe asks for; "loss" when that metric is not bundled. Tagged
        # words (data.columns.tags) are selected on entity micro-F1 whatever the order: token accuracy
        # rewards predicting "O".
        first = metrics[0] if metrics else None
        keys = BUNDLED_METRICS.get(first, ()) if first else ()
        if data is not None and data.columns.tags is not None:
            keys = ("f1",) if "f1" in (metrics or ()) else ENTITY_METRICS.get(first, ()) if first else ()
        if task in REGRESSION_TASKS:  # numbers: the first regression metric listed, pearson by default
            keys = REGRESSION_METRICS.get(first, ()) if first else ()
            keys = keys or ("pearson",)
        if data is not None and data.columns.mask is not None:  # masks: selected on mean IoU (metrics/segmentation.py)
            keys = SEGMENTATION_METRICS.get(first, ("mean_iou",)) if first else ("mean_iou",)
        if task in MULTI_LABEL_TASKS:  # label sets: macro-F1 at tuned thresholds, whatever the order of metrics
            keys = ("f1",)
        training["metric_for_best_model"] = keys[0] if keys else "loss"
    if "greater_is_better" not in user and training.get("metric_for_best_model"):
        selected = str(training["metric_for_best_model"]).removeprefix("eval_")
        training["greater_is_better"] = not (selected.endswith("loss") or selected in LOWER_IS_BETTER)
    return training


# --- the task against the sections --------------------------------------------------------------------------


def task_augmentation_problems(task: str | None, augmentation: Augmentation | None) -> list[Problem]:
    if TASK_INPUTS.get(task) not in (None, "image") and augmentation not in (None, Augmentation()):
        return [Problem("augmentation", "only applies to task: image-classification"
                        + (" or image-regression" if task in REGRESSION_TASKS else
                           " or image-multi-label" if task in MULTI_LABEL_TASKS else "")
                        + (" (semantic-segmentation moves image and mask together with its own flips and crops)"
                           if task == "semantic-segmentation" else ""))]
    if task in REGRESSION_TASKS and augmentation is not None and augmentation.mixes:
        return [Problem("augmentation", "mixup/cutmix mix class targets; they do not apply to image-regression")]
    if task in MULTI_LABEL_TASKS and augmentation is not None and augmentation.mixes:
        return [Problem("augmentation.mixup" if augmentation.mixup else "augmentation.cutmix",
                        f"mixup/cutmix mix one class per image; {task} does not mix label sets")]
    return []


def task_data_problems(task: str | None, data: DataSpec, prep: Preprocessing | None) -> list[Problem]:
    """Data (and preprocessing) keys that only apply to the other task."""
    problems: list[Problem] = []
    cols = data.columns
    problems += target_columns_problems(task, data)
    if task != "token-classification":
        problems += token_keys_problems(data, prep)
    if task != "semantic-segmentation":
        problems += [Problem(f"data.{key}", "only applies to task: semantic-segmentation") for key, value in (
            ("columns.mask", data.columns.mask), ("mask_folder", data.mask_folder),
            ("label_names_file", data.label_names_file), ("image_size", data.image_size)) if value is not None]
        if data.ignore_index != DataSpec.model_fields["ignore_index"].default:
            problems.append(Problem("data.ignore_index", "only applies to task: semantic-segmentation"))
    else:
        problems += mask_data_problems(data, prep)
    problems += multi_label_data_problems(task, data)
    kind = TASK_INPUTS.get(task)
    if task == "token-classification":
        problems += token_data_problems(data, prep)
    elif kind == "text":
        if cols.image is not None:
            problems.append(Problem("data.columns.image", "only applies to task: image-classification"))
        for key in ("bad_images", "verify_images"):
            if getattr(data, key) != DataSpec.model_fields[key].default:
                problems.append(Problem(f"data.{key}", "only applies to task: image-classification"))
        if data.image_folder is not None:
            problems.append(Problem("data.image_folder", "only applies to task: image-classification"))
    elif kind == "image":
        if data.bad_images == "skip" and not data.verify_images:
            problems.append(
                Problem("data.bad_images", "'skip' needs data.verify_images: true to find the images to skip")
            )
        for key in ("text", "text_pair"):
            if getattr(cols, key) is not None:
                problems.append(Problem(f"data.columns.{key}", "only applies to task: text-classification"))
        if prep is not None and prep.max_length is not None:
            problems.append(
                Problem(
                    "preprocessing.max_length",
                    "only applies to text; image size comes from the backbone's pretrained config",
                )
            )
    return problems


def task_model_problems(task: str, model: ModelSpec) -> list[Problem]:
    problems: list[Problem] = []
    kind = TASK_INPUTS.get(task)
    if kind in ("text", "words") and model.channels_last is not None:
        problems.append(Problem("model.channels_last", "only applies to image tasks"))
    if task == "semantic-segmentation" and model.pooling != "auto":
        problems.append(Problem("model.pooling", "only applies to text models; a segmentation decoder reads the "
                                                 "backbone's feature maps"))
    if task == "token-classification" and model.pooling != "auto":
        problems.append(Problem("model.pooling", "only applies to text-classification: a token head reads "
                                                 "every token's own state"))
    if kind == "image" and model.pooling != "auto":
        problems.append(Problem("model.pooling", "only applies to text models; a timm backbone pools itself"))
    if kind == "image" and model.attn_implementation is not None:
        problems.append(Problem("model.attn_implementation",
                                "only applies to text models; timm picks its attention kernel itself"))
    if kind in ("image", "masks") and model.attention_dropout is not None:
        problems.append(Problem("model.attention_dropout", "only applies to text models"))
    if kind in ("image", "masks") and model.hidden_dropout is not None:
        problems.append(Problem("model.hidden_dropout", "only applies to text models; a timm backbone's drop rates "
                                                        "are its own"))
    return problems


# --- training, batch, fine-tuning, distillation -------------------------------------------------------------


def batch_training_problems(batch: Batch, user_training: dict[str, Any]) -> list[Problem]:
    if batch.global_size is not None and "gradient_accumulation_steps" in user_training:
        return [Problem("training.gradient_accumulation_steps",
                        "is derived from batch.global_size; set one or the other")]
    return []


def finetune_cross_problems(ft: Finetune, training: dict[str, Any] | None, task: str | None,
                            augmentation: Augmentation | None) -> list[Problem]:
    """What a strategy needs from augmentation and training."""
    problems: list[Problem] = []
    if task in REGRESSION_TASKS and ft.class_weights is not None:
        problems.append(Problem("finetune.class_weights", f"weights classes; {task} predicts numbers"))
    if ft.cache_features and augmentation is not None and augmentation != Augmentation():
        problems.append(Problem("augmentation", "has no effect with finetune.cache_features: features are computed "
                                                "once, with evaluation preprocessing"))
    if training is not None:
        if ft.early_stopping_patience is not None:
            if not training.get("load_best_model_at_end") or training.get("eval_strategy", installed_default("eval_strategy")) == "no":
                problems.append(Problem("finetune.early_stopping_patience",
                                        "needs evaluations and training.load_best_model_at_end: true"))
        if augmentation is not None and augmentation.mixes and TASK_INPUTS.get(task) == "image":
            batch = training.get("per_device_train_batch_size", installed_default("per_device_train_batch_size"))
            if batch % 2:
                problems.append(Problem("training.per_device_train_batch_size",
                                        f"mixup/cutmix pair up samples: needs an even batch size, got {batch}"))
            if training.get("dataloader_drop_last") is False:
                problems.append(Problem("training.dataloader_drop_last",
                                        "mixup/cutmix need full (even) batches: leave it true"))
    return problems


def lora_model_problems(ft: Finetune, model: ModelSpec | None) -> list[Problem]:
    if ft.strategy == "lora" and model is not None and not model.pretrained:
        return [Problem("model.pretrained",
                        "false makes no sense with finetune.strategy: lora: the frozen backbone would stay "
                        "random (use strategy full to train from scratch)")]
    return []


def save_adapter_problems(output: OutputSpec | None, ft: Finetune | None) -> list[Problem]:
    if output is not None and output.save_adapter and ft is not None and ft.strategy != "lora":
        return [Problem("output.save_adapter", "only applies to finetune.strategy: lora")]
    return []


def distill_cross_problems(distill: Distill, ft: Finetune | None) -> list[Problem]:
    if distill.teacher is not None and ft is not None and ft.cache_features:
        return [Problem("distill.teacher", "cannot be combined with finetune.cache_features (the teacher "
                                           "needs the inputs, not the student's cached features)")]
    return []


# --- self-training: the unlabelled pool and the section together -------------------------------------------

POOL_SOURCES = ("files", "split", "image_folder")
# The tasks whose inputs a folder of image files holds (the task layer reads them: Inputs.folder_key).
FOLDER_TASKS = ("image-classification",)  # image-regression: targets come from a table, not class folders


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
    given = [k for k in POOL_SOURCES if getattr(pool, k) is not None]
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
        if task not in FOLDER_TASKS:
            problems.append(Problem("data.unlabeled.image_folder",
                                    f"only applies to task: {', '.join(FOLDER_TASKS)}"))
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


# --- search: the searched keys, the objective and each edge of the space -----------------------------------


def objective_problems(metric: Any, pruner: str | None, metrics: list[str],
                       training: dict[str, Any] | None, entities: bool = False, task: Any = None) -> list[Problem]:
    """The objective names a metric this run produces (`entities`: a token-classification run's figures;
    `task`: the regression, multi-label and segmentation tasks report their own); a pruner needs evaluations
    during training."""
    problems = []
    if isinstance(metric, str):
        produced = metric_keys(metrics, entities, task) | {"loss"}
        bare = metric.removeprefix("eval_").removeprefix("validation_")
        if bare not in produced:
            problems.append(Problem("search.objective.metric",
                                    f"'{metric}' is not produced by this run; it produces "
                                    f"{', '.join(sorted(produced))}" + did_you_mean(bare, produced)))
    if training is not None and pruner not in (None, "none") and str(training.get("eval_strategy")) == "no":
        problems.append(Problem("search.pruner.type", f"'{pruner}' prunes at evaluations, and "
                                "training.eval_strategy is 'no'; evaluate during training or set none"))
    return problems


def space_key_problems(space: dict[str, Any]) -> list[Problem]:
    """Every searched key names a recipe key (did-you-mean otherwise) that the search does not own."""
    problems = []
    for key in space:
        parts = key.split(".")
        where = f"search.space.{key}"
        owned = next((why for name, why in OWNED_BY_SEARCH.items() if key == name or key.startswith(name + ".")),
                     None)
        if owned:
            problems.append(Problem(where, f"cannot be searched: {owned}"))
            continue
        message = key_path_problem(parts) if all(parts) else "not a dotted recipe key"
        if message:
            problems.append(Problem(where, f"not a recipe key ({message})"))
    return problems


def search_problems(raw: dict[str, Any], search: SearchSpec | None, metrics: list[str] | None,
                    training: dict[str, Any] | None) -> list[Problem]:
    """The checks of a `search:` section that need the rest of the recipe (key paths under search.).

    They run even when the section itself has other mistakes (`search` None), on its raw values, so
    that one error lists them all.
    """
    section = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    space = SearchSpec._dotted_keys(section.get("space")) if search is None else (search.space or {})
    problems = space_key_problems(space if isinstance(space, dict) else {})
    objective = section.get("objective") if isinstance(section.get("objective"), dict) else {}
    pruner = search.pruner.type if search is not None else None
    metric = search.objective.metric if search is not None else objective.get("metric")
    problems += objective_problems(metric, pruner, metrics or [], training,
                                   entities=raw.get("task") == "token-classification", task=raw.get("task"))
    return problems


def endpoint_values(dim: Any) -> list[tuple[str, Any]]:
    """The values a dimension can reach at its edges: (label, value) for low, high or each choice."""
    if dim.choices is not None:
        return [(f"choices[{i}]", c) for i, c in enumerate(dim.choices)]
    return [("low", dim.low), ("high", dim.high)]


def endpoint_problems(raw: dict[str, Any], space: dict[str, Any],
                      validate: Callable[[dict[str, Any]], Any]) -> list[Problem]:
    """Each edge of each dimension, set alone on the recipe, must give a valid recipe (e.g. a batch size of 0
    or a strategy name that does not exist is found here, before any trial).

    Args:
        raw: the raw recipe; its `search` section is left out.
        space: dotted key -> SearchDimension.
        validate: validates a raw recipe, raising RecipeError (validate_recipe with the caller's source and checks).
    """
    base = {k: v for k, v in raw.items() if k != "search"}
    problems = []
    for key, dim in space.items():
        for label, value in endpoint_values(dim):
            try:
                validate(apply_values(base, {key: value}))
            except RecipeError as exc:
                for p in exc.problems:
                    at = f" ({p.path}: {p.message})" if p.path and p.path != key else f" ({p.message})"
                    problems.append(Problem(f"search.space.{key}.{label}", f"{show(value)} gives an invalid "
                                            f"recipe{at}"))
    return problems
