"""Validating a raw recipe mapping into a `Recipe`: every problem at once, each with its dotted key path.

Each top-level section is validated on its own, then the checks that span sections run on those
that are valid; the `training` section is checked against the installed `TrainingArguments`.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from hf_finetune.errors import Problem, RecipeError, did_you_mean, show
from hf_finetune.hub import TOKEN_HINT
from hf_finetune.metrics.names import BUNDLED_METRICS, metric_keys, suggest_bundled
from hf_finetune.outputs.folder import output_dir_problem
from hf_finetune.recipe.schema import (
    FILE_FORMATS,
    Augmentation,
    DataSpec,
    Distill,
    Finetune,
    HubSpec,
    Preprocessing,
    Recipe,
    section_model,
)
from hf_finetune.recipe.secrets import without_secrets
from hf_finetune.training.arguments import house_defaults, installed_default
from hf_finetune.training.fields import check_training_section


def _unknown_key(key: str, valid: Any) -> str:
    if "token" in key.lower():
        return f"tokens never go in a recipe: {TOKEN_HINT}"  # and the value is never echoed
    return "unknown key" + did_you_mean(key, valid)


def _pydantic_problems(exc: ValidationError, prefix: list[str]) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = prefix + [str(p) for p in err["loc"] if not isinstance(p, int)]
        path = ".".join(loc) + "".join(f"[{p}]" for p in err["loc"] if isinstance(p, int))
        kind = err["type"]
        if kind == "extra_forbidden":
            model = Recipe
            for part in loc[:-1]:
                sub = section_model(model.model_fields[part].annotation) if part in model.model_fields else None
                if sub is None:
                    break
                model = sub
            message = _unknown_key(loc[-1], model.model_fields)
        elif kind == "missing":
            message = "required key is missing"
            model = Recipe
            for part in loc:
                field = model.model_fields.get(part)
                if field is None:
                    break
                if part == loc[-1] and field.description:
                    message += f" ({field.description})"
                model = section_model(field.annotation) or model
        elif kind in ("model_type", "dict_type") and not isinstance(err.get("input"), dict):
            value = err.get("input")
            message = f"must be a section (a mapping of keys), got {show(value)} ({type(value).__name__})"
        elif kind == "value_error":
            message = str(err.get("ctx", {}).get("error", err["msg"]))
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            message = f"{show(err['input'])} is not allowed; expected {expected}"
            choices = [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",")]
            if isinstance(err["input"], str):
                message += did_you_mean(err["input"], choices)
        else:
            value = err.get("input")
            shown = f"{show(value)} ({type(value).__name__})" if not isinstance(value, dict) else "a mapping"
            message = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {shown}"
        problems.append(Problem(path, message))
    return problems


def _cross_checks(task: str | None, data: DataSpec | None, prep: Preprocessing | None,
                  augmentation: Augmentation | None, for_training: bool = True) -> list[Problem]:
    """Checks that need several keys at once; a section that failed validation is skipped (None)."""
    problems: list[Problem] = []
    if task == "text-classification" and augmentation not in (None, Augmentation()):
        problems.append(Problem("augmentation", "only applies to task: image-classification"))
    if data is None:
        return problems
    cols = data.columns
    sources = [k for k in ("dataset", "files", "image_folder") if getattr(data, k) is not None]
    if not sources:
        problems.append(Problem("data", "say where the data is: data.dataset, data.files or data.image_folder"))
    elif len(sources) > 1:
        problems.append(
            Problem("data", f"give one data source, not {' and '.join('data.' + s for s in sources)}")
        )
    for key in ("config", "revision"):
        if getattr(data, key) is not None and data.dataset is None:
            problems.append(Problem(f"data.{key}", "only applies with data.dataset (a Hub dataset)"))

    if data.files is not None:
        if not data.files:
            problems.append(Problem("data.files", "is empty; give at least a train file"))
        elif for_training and data.splits.train not in data.files:
            problems.append(
                Problem(
                    "data.files",
                    f"has no '{data.splits.train}' split (the training split, data.splits.train); "
                    f"keys given: {', '.join(data.files)}",
                )
            )
        for split, paths in data.files.items():
            key = f"data.files.{split}"
            if not paths:
                problems.append(Problem(key, "no files given"))
            for p in paths:
                suffix = Path(p).suffix.lower()
                if suffix not in FILE_FORMATS:
                    problems.append(
                        Problem(key, f"'{p}': unsupported file type; use {', '.join(FILE_FORMATS)}")
                    )
                elif not glob.glob(p):
                    problems.append(Problem(key, f"file not found: {p}"))
            if len({FILE_FORMATS.get(Path(p).suffix.lower()) for p in paths}) > 1:
                problems.append(Problem(key, "files of one split must share a format"))
    if data.image_folder is not None and not Path(data.image_folder).is_dir():
        problems.append(Problem("data.image_folder", f"folder not found: {data.image_folder}"))
    if data.dataset is not None and data.dataset.startswith((".", "/", "~")) and not Path(data.dataset).exists():
        problems.append(Problem("data.dataset", f"local dataset folder not found: {data.dataset}"))
    if data.label_names is not None and len(set(data.label_names)) != len(data.label_names):
        problems.append(Problem("data.label_names", "names must be unique"))
    used = [c for c in (cols.text, cols.text_pair, cols.image) if c is not None]
    if cols.label in used:
        problems.append(Problem("data.columns.label", f"'{cols.label}' is also used as an input column"))
    if cols.text is not None and cols.text == cols.text_pair:
        problems.append(Problem("data.columns.text_pair", "must differ from data.columns.text"))

    if task == "text-classification":
        if cols.image is not None:
            problems.append(Problem("data.columns.image", "only applies to task: image-classification"))
        for key in ("bad_images", "verify_images"):
            if getattr(data, key) != DataSpec.model_fields[key].default:
                problems.append(Problem(f"data.{key}", "only applies to task: image-classification"))
        if data.image_folder is not None:
            problems.append(Problem("data.image_folder", "only applies to task: image-classification"))
    elif task == "image-classification":
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


def _finetune_checks(ft: Finetune, training: dict[str, Any] | None, task: str | None,
                     augmentation: Augmentation | None) -> list[Problem]:
    """Keys that only mean something for one strategy, and what a strategy needs from training."""
    problems: list[Problem] = []
    default = Finetune()
    only_for = {
        "cache_features": "linear_probe",
        "unfreeze_every": "gradual_unfreeze",
        "unfreeze_unit": "gradual_unfreeze",
        "blocks_per_unfreeze": "gradual_unfreeze",
        "probe_epochs": "probe_then_full",
    }
    for key, strategy in only_for.items():
        if getattr(ft, key) != getattr(default, key) and ft.strategy != strategy:
            problems.append(Problem(f"finetune.{key}", f"only applies to finetune.strategy: {strategy}"))
    if ft.strategy != "lora" and "lora" in ft.model_fields_set:
        problems.append(Problem("finetune.lora", "only applies to finetune.strategy: lora"))
    if ft.strategy == "linear_probe":
        for key in ("layer_decay", "backbone_lr_scale"):
            if getattr(ft, key) != getattr(default, key):
                problems.append(Problem(f"finetune.{key}", "has no effect with linear_probe: the backbone is frozen"))
    if ft.cache_features and augmentation is not None and augmentation != Augmentation():
        problems.append(Problem("augmentation", "has no effect with finetune.cache_features: features are computed "
                                                "once, with evaluation preprocessing"))
    if isinstance(ft.class_weights, list) and any(w <= 0 for w in ft.class_weights):
        problems.append(Problem("finetune.class_weights", "weights must be positive"))
    if isinstance(ft.class_weights, dict) and any(w <= 0 for w in ft.class_weights.values()):
        problems.append(Problem("finetune.class_weights", "weights must be positive"))
    if training is not None:
        if ft.early_stopping_patience is not None:
            if not training.get("load_best_model_at_end") or training.get("eval_strategy", installed_default("eval_strategy")) == "no":
                problems.append(Problem("finetune.early_stopping_patience",
                                        "needs evaluations and training.load_best_model_at_end: true"))
        if augmentation is not None and augmentation.mixes and task == "image-classification":
            batch = training.get("per_device_train_batch_size", installed_default("per_device_train_batch_size"))
            if batch % 2:
                problems.append(Problem("training.per_device_train_batch_size",
                                        f"mixup/cutmix pair up samples: needs an even batch size, got {batch}"))
            if training.get("dataloader_drop_last") is False:
                problems.append(Problem("training.dataloader_drop_last",
                                        "mixup/cutmix need full (even) batches: leave it true"))
    return problems


def _distill_checks(distill: Distill, ft: Finetune | None, task: str | None, check_teacher: bool) -> list[Problem]:
    """Distillation settings need a teacher; the teacher must be a finished run (or ensemble) for the task."""
    default = Distill()
    if distill.teacher is None:
        return [Problem(f"distill.{key}", "only applies with distill.teacher")
                for key in ("temperature", "alpha") if getattr(distill, key) != getattr(default, key)]
    problems = []
    if ft is not None and ft.cache_features:
        problems.append(Problem("distill.teacher", "cannot be combined with finetune.cache_features (the teacher "
                                                   "needs the inputs, not the student's cached features)"))
    if check_teacher:
        from hf_finetune.outputs import read_run

        run = read_run(distill.teacher)
        if run is None:
            problems.append(Problem("distill.teacher", f"{show(distill.teacher)} holds no finished run or ensemble "
                                                       "(no complete run.json)"))
        elif task is not None and run.get("task") != task:
            problems.append(Problem("distill.teacher", f"{show(distill.teacher)} is a {run.get('task')} model; "
                                                       f"the recipe's task is {task}"))
    return problems


def _hub_checks(hub: HubSpec | None) -> list[Problem]:
    if hub is not None and hub.push and hub.repo_id is None:
        return [Problem("hub.repo_id", "required when hub.push is true (e.g. my-name/my-model)")]
    return []


def _metric_checks(metrics: list[str]) -> list[Problem]:
    problems = []
    if not metrics:
        problems.append(Problem("metrics", "give at least one metric (e.g. [accuracy])"))
    for i, name in enumerate(metrics):
        near = suggest_bundled(name)
        if near:
            problems.append(Problem(f"metrics[{i}]", f"unknown metric '{name}'; did you mean '{near}'?"))
    return problems


def _training_cross_checks(t: dict[str, Any], metrics: list[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    if t.get("load_best_model_at_end"):
        eval_s, save_s = str(t.get("eval_strategy", installed_default("eval_strategy"))), str(t.get("save_strategy", installed_default("save_strategy")))
        if eval_s == "no":
            problems.append(
                Problem("training.load_best_model_at_end", "needs evaluations: set training.eval_strategy")
            )
        elif save_s == "best":
            pass  # saving on a new best already follows evaluation
        elif eval_s != save_s:
            problems.append(
                Problem(
                    "training.load_best_model_at_end",
                    f"needs training.eval_strategy and training.save_strategy to match "
                    f"(they are '{eval_s}' and '{save_s}')",
                )
            )
        elif eval_s == "steps":
            eval_steps = t.get("eval_steps") or t.get("logging_steps", installed_default("logging_steps"))
            save_steps = t.get("save_steps", installed_default("save_steps"))
            both_counts = eval_steps >= 1 and save_steps >= 1
            if both_counts and save_steps % eval_steps != 0:
                problems.append(
                    Problem(
                        "training.save_steps",
                        f"must be a multiple of training.eval_steps ({eval_steps:g}) to keep the best checkpoint",
                    )
                )
    metric = t.get("metric_for_best_model")
    if metric is not None and metrics is not None:
        produced = metric_keys(metrics) | {"loss"}
        bare = metric[len("eval_"):] if metric.startswith("eval_") else metric
        if bare not in produced:
            problems.append(
                Problem(
                    "training.metric_for_best_model",
                    f"'{metric}' is not produced by this run; it produces {', '.join(sorted(produced))}"
                    + did_you_mean(bare, produced),
                )
            )
    resume = t.get("resume_from_checkpoint")
    if resume is not None and resume != "auto" and not Path(resume).is_dir():
        problems.append(
            Problem("training.resume_from_checkpoint", f"use 'auto' or an existing checkpoint folder; not found: {resume}")
        )
    if t.get("fp16") and t.get("bf16"):
        problems.append(Problem("training.fp16", "choose one of training.fp16 and training.bf16"))
    return problems


def _resolve_training(task: str, user: dict[str, Any], metrics: list[str] | None,
                      augmentation: Augmentation | None = None) -> dict[str, Any]:
    """House defaults under the user's `training` values, plus the model-selection metric."""
    training = house_defaults(task, mixes=augmentation is not None and augmentation.mixes)
    training.update(user)
    if training.get("load_best_model_at_end") and training.get("metric_for_best_model") is None:
        # Select on the first metric the recipe asks for; "loss" when that metric is not bundled.
        first = metrics[0] if metrics else None
        keys = BUNDLED_METRICS.get(first, ()) if first else ()
        training["metric_for_best_model"] = keys[0] if keys else "loss"
    if "greater_is_better" not in user and training.get("metric_for_best_model"):
        training["greater_is_better"] = not str(training["metric_for_best_model"]).endswith("loss")
    return training


def _resolve_data(task: str, data: DataSpec) -> None:
    cols = data.columns
    if task == "text-classification" and cols.text is None:
        cols.text = "text"
    if task == "image-classification" and cols.image is None:
        cols.image = "image"


def validate_recipe(raw: dict[str, Any], source: str | None = None,
                    overrides: list[str] | None = None, purpose: str = "train") -> Recipe:
    """Validates a raw recipe mapping into a `Recipe`, reporting every problem at once.

    Each top-level section is validated on its own, so a mistake in one section does not hide the
    mistakes in another; checks that span sections run on the sections that are valid.

    Args:
        raw: the parsed YAML mapping, overrides already applied.
        source: the recipe file path, used in messages and for the default output folder.
        overrides: the `dotted.key=value` overrides already applied to `raw`, recorded for messages
            (a resume command repeats them).
        purpose: "train", or "evaluate" for a finished run's recipe pointed at data to score (which
            needs no training split: `hf-finetune evaluate` picks the split itself).

    Raises:
        RecipeError: listing every problem with its dotted key path.
    """
    raw, problems = without_secrets(raw)
    fields = Recipe.model_fields
    for key in raw:
        if key not in fields:
            problems.append(Problem(str(key), _unknown_key(str(key), fields)))
    parts: dict[str, Any] = {}
    for name, field in fields.items():
        if name == "training":
            parts[name], training_problems = check_training_section(raw.get("training"))
            problems += training_problems
            if training_problems:
                parts[name] = None
            continue
        if name not in raw:
            if field.is_required():
                problems.append(Problem(name, f"required key is missing ({field.description})"))
                parts[name] = None
            continue
        try:
            parts[name] = TypeAdapter(field.annotation).validate_python(raw[name])
        except ValidationError as exc:
            problems += _pydantic_problems(exc, prefix=[name])
            parts[name] = None

    task = parts.get("task")
    data = parts.get("data")
    metrics = parts.get("metrics", fields["metrics"].default_factory())
    if task is not None and data is not None:
        _resolve_data(task, data)
    problems += _cross_checks(task, data, parts.get("preprocessing"), parts.get("augmentation"),
                              for_training=purpose == "train")
    problems += _hub_checks(parts.get("hub"))
    if metrics is not None:
        problems += _metric_checks(metrics)
    if parts.get("training") is not None and task is not None:
        parts["training"] = _resolve_training(task, parts["training"], metrics, parts.get("augmentation"))
        problems += _training_cross_checks(parts["training"], metrics)
    model = parts.get("model")
    if model is not None and task is not None:
        if task == "text-classification" and model.channels_last is not None:
            problems.append(Problem("model.channels_last", "only applies to task: image-classification"))
        if task == "image-classification" and model.pooling != "auto":
            problems.append(Problem("model.pooling", "only applies to text models; a timm backbone pools itself"))
        if task == "image-classification" and model.attn_implementation is not None:
            problems.append(Problem("model.attn_implementation",
                                    "only applies to text models; timm picks its attention kernel itself"))
    batch = parts.get("batch")
    if batch is not None:
        if batch.max_per_device is not None and batch.global_size is None:
            problems.append(Problem("batch.max_per_device", "only applies with batch.global_size"))
        user_training = raw.get("training") if isinstance(raw.get("training"), dict) else {}
        if batch.global_size is not None and "gradient_accumulation_steps" in user_training:
            problems.append(Problem("training.gradient_accumulation_steps",
                                    "is derived from batch.global_size; set one or the other"))
    output = parts.get("output")
    if parts.get("finetune") is not None:
        problems += _finetune_checks(parts["finetune"], parts.get("training"), task, parts.get("augmentation"))
    finetune = parts.get("finetune") if "finetune" in raw else Finetune()
    if finetune is not None and finetune.strategy == "lora":
        from hf_finetune.training.lora import lora_recipe_problems

        problems += lora_recipe_problems(finetune, parts.get("model"))
    if output is not None and output.save_adapter and finetune is not None and finetune.strategy != "lora":
        problems.append(Problem("output.save_adapter", "only applies to finetune.strategy: lora"))
    if parts.get("distill") is not None:
        problems += _distill_checks(parts["distill"], parts.get("finetune"), task, check_teacher=purpose == "train")
    from hf_finetune.selftrain.checks import self_training_problems

    problems += self_training_problems(task, data, parts.get("self_training"),
                                       training_given=raw.get("self_training") is not None)
    if output is not None and output.dir is not None:
        problem = output_dir_problem(output.dir)
        if problem:
            problems.append(Problem("output.dir", problem))
    rank = parts.get("rank")
    if rank is not None and rank.by == "hscore" and not rank.hscore:  # found by `check`, not after loading models
        problems.append(Problem("rank.by", "hscore needs rank.hscore: true"))
    if "search" in raw:
        from hf_finetune.search.space import endpoint_problems, search_problems

        problems += search_problems(raw, parts.get("search"), metrics, parts.get("training"))
        if not problems and parts["search"].space:  # each edge of the space, on an otherwise valid recipe
            problems += endpoint_problems(raw, parts["search"].space, source)
    if problems:
        raise RecipeError(problems, source)
    recipe = Recipe(**{k: v for k, v in parts.items() if v is not None})
    recipe.set_origin(source, set(raw.get("training") or {}), overrides)
    if recipe.output.dir is None:
        stem = Path(source).stem if source else "run"
        recipe.output.dir = str(Path("outputs") / stem)
    return recipe
