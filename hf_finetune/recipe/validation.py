"""Validating a raw recipe mapping into a `Recipe`: every problem at once, each with its dotted key path.

Each top-level section is validated on its own (its schema, then its own checks in recipe/sections/),
then the checks that span sections (recipe/cross.py) run on those that are valid, then the checks
that need a capability's logic, which the caller passes in (hf_finetune/capability_checks.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from hf_finetune.errors import TOKEN_HINT, Problem, RecipeError, did_you_mean, show
from hf_finetune.recipe import cross, task_checks
from hf_finetune.recipe.schema import REGRESSION_TASKS, Recipe, section_model
from hf_finetune.recipe.secrets import without_secrets
from hf_finetune.recipe.sections.batch import batch_problems
from hf_finetune.recipe.sections.data import data_problems
from hf_finetune.recipe.sections.distill import distill_problems
from hf_finetune.recipe.sections.finetune import Finetune, finetune_problems, lora_problems
from hf_finetune.recipe.sections.hub import hub_problems
from hf_finetune.recipe.sections.metrics import (
    REGRESSION_METRICS,
    SEGMENTATION_METRICS,
    metric_keys,
    metrics_problems,
)
from hf_finetune.recipe.sections.output import output_problems
from hf_finetune.recipe.sections.rank import rank_problems
from hf_finetune.recipe.sections.training import check_training_section, training_problems
from hf_finetune.recipe.streaming import streaming_problems

# A check that needs a capability's own logic (e.g. whether distill.teacher holds a finished run): it gets
# the sections by name (validated; None or absent where invalid or not given) and returns problems, which
# are reported with the recipe's own. The entry points pass hf_finetune.capability_checks.RECIPE_CHECKS.
SectionCheck = Callable[[Mapping[str, Any]], list[Problem]]


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


def _validate_sections(raw: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Each top-level section validated on its own: {name: section or None}, and the problems found."""
    problems: list[Problem] = []
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
    return parts, problems


def _section_problems(raw: dict[str, Any], parts: dict[str, Any], purpose: str) -> list[Problem]:
    """Each valid section's own checks, and the checks that span sections; resolves data and training defaults."""
    problems: list[Problem] = []
    task, data = parts.get("task"), parts.get("data")
    prep, augmentation, model = parts.get("preprocessing"), parts.get("augmentation"), parts.get("model")
    if task in REGRESSION_TASKS and "metrics" not in raw:  # the classification defaults mean nothing to numbers
        parts["metrics"] = list(REGRESSION_METRICS)
    metrics = parts.get("metrics", Recipe.model_fields["metrics"].default_factory())
    if task == "semantic-segmentation" and "metrics" not in raw:  # masks report their own figures
        metrics = parts["metrics"] = list(SEGMENTATION_METRICS)
    if task is not None and data is not None:
        cross.resolve_data(task, data)
    problems += cross.task_augmentation_problems(task, augmentation)
    if data is not None:
        problems += data_problems(data, for_training=purpose == "train")
        problems += cross.task_data_problems(task, data, prep)
    if parts.get("hub") is not None:
        problems += hub_problems(parts["hub"])
    if metrics is not None:
        problems += metrics_problems(metrics)
        problems += task_checks.token_metrics_problems(task, metrics)
        problems += task_checks.regression_metrics_problems(task, metrics)
        problems += task_checks.mask_metrics_problems(task, metrics)
        problems += task_checks.multi_label_metrics_problems(task, metrics)
    if parts.get("training") is not None and task is not None:
        parts["training"] = cross.resolve_training(data, parts["training"], metrics, augmentation, task)
        entities = data is not None and data.columns.tags is not None  # tagged words: entity-level figures
        produced = metric_keys(metrics, entities, task) | {"loss"} if metrics is not None else None
        problems += training_problems(parts["training"], produced)
    if model is not None and task is not None:
        problems += cross.task_model_problems(task, model)
    batch = parts.get("batch")
    if batch is not None:
        problems += batch_problems(batch)
        user_training = raw.get("training") if isinstance(raw.get("training"), dict) else {}
        problems += cross.batch_training_problems(batch, user_training)
    ft = parts.get("finetune")
    if ft is not None:
        problems += finetune_problems(ft)
        problems += cross.finetune_cross_problems(ft, parts.get("training"), task, augmentation)
        problems += lora_problems(ft)
        problems += cross.lora_model_problems(ft, model)
    output = parts.get("output")
    problems += cross.save_adapter_problems(output, ft if "finetune" in raw else Finetune())
    distill = parts.get("distill")
    if distill is not None:
        problems += distill_problems(distill)
        problems += cross.distill_cross_problems(distill, ft)
    problems += cross.self_training_problems(task, data, parts.get("self_training"),
                                             training_given=raw.get("self_training") is not None)
    # The folders a training run (and check) writes into must be writable; an evaluation's output.dir is
    # the finished run's own folder, which it only reads.
    writable = purpose == "train"
    if output is not None:
        problems += output_problems(output, writable)
    if parts.get("rank") is not None:
        problems += rank_problems(parts["rank"], writable)
    if "search" in raw:
        problems += cross.search_problems(raw, parts.get("search"), metrics, parts.get("training"))
    problems += streaming_problems(raw, parts)  # data.streaming: what a stream needs and cannot serve
    return problems


def validate_recipe(raw: dict[str, Any], source: str | None = None, overrides: list[str] | None = None,
                    purpose: str = "train", checks: Sequence[SectionCheck] = ()) -> Recipe:
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
        checks: checks that need a capability's logic (hf_finetune.capability_checks.RECIPE_CHECKS); the
            entry points that train, check, rank or tune pass them, and each edge of a search space
            is validated with them too.

    Raises:
        RecipeError: listing every problem with its dotted key path.
    """
    raw, problems = without_secrets(raw)
    parts, section_problems = _validate_sections(raw)
    problems += section_problems
    problems += _section_problems(raw, parts, purpose)
    for check in checks:
        problems += check(parts)
    search = parts.get("search")
    if not problems and search is not None and search.space:  # each edge of the space, on an otherwise valid recipe
        problems += cross.endpoint_problems(raw, search.space,
                                            lambda edge: validate_recipe(edge, source, checks=checks))
    if problems:
        raise RecipeError(problems, source)
    recipe = Recipe(**{k: v for k, v in parts.items() if v is not None})
    recipe.set_origin(source, set(raw.get("training") or {}), overrides)
    if recipe.output.dir is None:
        stem = Path(source).stem if source else "run"
        recipe.output.dir = str(Path("outputs") / stem)
    return recipe
