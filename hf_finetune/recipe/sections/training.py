"""`training`: TrainingArguments fields, checked against the installed transformers; our house defaults.

The section is passed to `transformers.TrainingArguments`, so its keys are whatever the installed
transformers accepts. Names are checked against `dataclasses.fields(TrainingArguments)` and values
against each field's type annotation, so a typo or a wrong type is reported with the recipe key
before any work starts. This reads the installed transformers' dataclass; it trains nothing (the
arguments themselves are built in training/arguments.py).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import re
import typing
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from hf_finetune.errors import TOKEN_HINT, Problem, did_you_mean, show

# Keys the pipeline sets itself; the message says where the user controls the same thing.
MANAGED_KEYS: dict[str, str] = {
    "output_dir": "set output.dir instead (checkpoints go to <output.dir>/checkpoints)",
    "push_to_hub": "set hub.push instead",
    "hub_model_id": "set hub.repo_id instead",
    "hub_private_repo": "set hub.private instead",
    "hub_revision": "set hub.revision instead",
    "hub_token": f"tokens never go in a recipe: {TOKEN_HINT}",
    "hub_strategy": "the finished run is pushed once; see hub.push",
    "hub_always_push": "the finished run is pushed once; see hub.push",
    "remove_unused_columns": "the data stage keeps exactly the columns the model needs",
    "label_names": "labels always travel as `labels`",
    "do_train": "a run always trains, then evaluates on validation and test",
    "do_eval": "a run always trains, then evaluates on validation and test",
    "do_predict": "a run always trains, then evaluates on validation and test",
    "local_rank": "set by the launcher (accelerate launch)",
    "include_for_metrics": "metrics are computed from predictions and labels",
    "batch_eval_metrics": "metrics are accumulated batch by batch already",
    "enable_jit_checkpoint": "SIGTERM and SIGINT always save a checkpoint at the next step boundary",
}


SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit
MAX_BATCH = 65_536  # per device; torch's samplers allocate a list per batch, so 1e9 takes gigabytes
MAX_EPOCHS = 10_000  # far beyond any real run (tiny data trains for hundreds at most); 1e30 is a typo

# Ranges TrainingArguments does not check itself (or checks only deep inside training): value -> ok?
# Each with what the message says is allowed. Steps given as a float below 1 are a share of the run.
RANGES: dict[str, tuple[Any, str]] = {
    "per_device_train_batch_size": (lambda v: 1 <= v <= MAX_BATCH, f"in [1, {MAX_BATCH}]"),
    "per_device_eval_batch_size": (lambda v: 1 <= v <= MAX_BATCH, f"in [1, {MAX_BATCH}]"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "at least 1"),
    "eval_accumulation_steps": (lambda v: v >= 1, "at least 1 (or null)"),
    "num_train_epochs": (lambda v: 0 < v <= MAX_EPOCHS,
                         f"above 0 (a run of 0 epochs would publish an untrained model) and at most {MAX_EPOCHS} "
                         "(a longer run is a mistake; training.max_steps counts steps)"),
    "max_steps": (lambda v: v == -1 or v >= 1, "-1 (train for num_train_epochs) or at least 1"),
    "learning_rate": (lambda v: v > 0, "above 0"),
    "weight_decay": (lambda v: v >= 0, "0 or more"),
    "adam_beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_epsilon": (lambda v: v > 0, "above 0"),
    "max_grad_norm": (lambda v: v >= 0, "0 or more (0 turns clipping off)"),
    "warmup_steps": (lambda v: v >= 0 and (v < 1 or v == int(v)), "0 or more: a share below 1, or whole steps"),
    "label_smoothing_factor": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "seed": (lambda v: 0 <= v <= SEED_MAX, f"in [0, {SEED_MAX}]"),
    "data_seed": (lambda v: 0 <= v <= SEED_MAX, f"in [0, {SEED_MAX}] (or null)"),
    "dataloader_num_workers": (lambda v: v >= 0, "0 or more"),
    "dataloader_prefetch_factor": (lambda v: v >= 1, "at least 1 (or null)"),
    "logging_steps": (lambda v: v > 0 and (v < 1 or v == int(v)), "above 0: a share below 1, or whole steps"),
    "save_steps": (lambda v: v > 0 and (v < 1 or v == int(v)), "above 0: a share below 1, or whole steps"),
    "eval_steps": (lambda v: v > 0 and (v < 1 or v == int(v)), "above 0: a share below 1, or whole steps"),
    "save_total_limit": (lambda v: v >= 1, "at least 1 (or null to keep every checkpoint)"),
    "eval_delay": (lambda v: v >= 0, "0 or more"),
    "torch_empty_cache_steps": (lambda v: v >= 1, "at least 1 (or null)"),
}


LOG_LEVELS = ("passive", "detail", "debug", "info", "warning", "error", "critical")


def _number_types(annotation: Any) -> tuple[bool, bool]:
    """(takes a number, takes a bool) for a field's annotation."""
    args = set(typing.get_args(annotation) or (annotation,))
    return bool(args & {int, float}), bool in args


def value_problem(key: str, value: Any, annotation: Any) -> str | None:
    """What is wrong with a coerced value that its type alone allows (a bool for a number, NaN, a range)."""
    numeric, boolean = _number_types(annotation)
    if numeric and not boolean and isinstance(value, bool):
        return f"expected a number, got {value!r} (bool)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if key in ("log_level", "log_level_replica") and isinstance(value, str) and value not in LOG_LEVELS:
        return f"{value!r} is not a log level; use one of {', '.join(LOG_LEVELS)}" + did_you_mean(value, LOG_LEVELS)
    if key == "debug" and "underflow_overflow" in str(value):
        return ("underflow_overflow is not supported: transformers' detector fails on the boolean masks of text "
                "models; hf-finetune stops on a NaN or infinite loss by itself")
    if key.endswith("_kwargs") and value is not None:
        parsed = value
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
        if not isinstance(parsed, dict):
            return f"must be a mapping of keyword arguments (e.g. {{power: 2.0}}), got {show(value)}"
    if key in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
        ok, allowed = RANGES[key]
        if not ok(value):
            return f"must be {allowed}, got {value!r}"
    return None


def _training_arguments_class():
    from transformers import TrainingArguments

    return TrainingArguments


@functools.cache
def training_fields() -> dict[str, Any]:
    """Name -> resolved type annotation of every `TrainingArguments` field the recipe may set."""
    cls = _training_arguments_class()
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints.get(f.name, f.type)
        for f in dataclasses.fields(cls)
        if f.init and f.name not in MANAGED_KEYS
    }


@functools.cache
def training_defaults() -> dict[str, Any]:
    """Name -> the installed `TrainingArguments` default, for the fields a recipe may set."""
    out = {}
    for f in dataclasses.fields(_training_arguments_class()):
        if f.name in training_fields():
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
    return out


@functools.cache
def _adapter(name: str) -> TypeAdapter:
    return TypeAdapter(training_fields()[name], config=ConfigDict(arbitrary_types_allowed=True))


def _enum_choices(annotation: Any) -> list[str] | None:
    """The allowed string values when a field's type includes an Enum (e.g. `SchedulerType | str`)."""
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return [str(m.value) for m in arg]
    return None


def _describe_type(annotation: Any) -> str:
    choices = _enum_choices(annotation)
    if choices is not None:
        return "one of " + ", ".join(choices)
    text = getattr(annotation, "__name__", None) or str(annotation)
    text = re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text)  # drop module paths
    return text.replace("NoneType", "None")


def check_training_section(section: Any, path: str = "training") -> tuple[dict[str, Any], list[Problem]]:
    """Checks the recipe's `training` mapping key by key.

    Args:
        section: the raw `training` value from the recipe.
        path: the dotted key path used in messages.

    Returns:
        The values coerced to their field types (e.g. "1e-5" -> 1e-05) and the problems found.
    """
    if section is None:
        return {}, []
    if not isinstance(section, dict):
        return {}, [Problem(path, f"must be a mapping of TrainingArguments fields, got {type(section).__name__}")]
    fields = training_fields()
    clean: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in section.items():
        key_path = f"{path}.{key}"
        if not isinstance(key, str):
            problems.append(Problem(key_path, "keys must be strings"))
            continue
        if key in MANAGED_KEYS:
            problems.append(Problem(key_path, f"not settable here: {MANAGED_KEYS[key]}"))
            continue
        if key not in fields:
            problems.append(
                Problem(key_path, "unknown TrainingArguments field" + did_you_mean(key, fields))
            )
            continue
        try:
            coerced = _adapter(key).validate_python(value)
        except ValidationError as exc:
            message = f"expected {_describe_type(fields[key])}, got {show(value)} ({type(value).__name__})"
            if isinstance(value, bool) and "no" in (_enum_choices(fields[key]) or []):
                message += "; YAML reads a bare no/yes as a boolean: write \"no\" in quotes"
            if _enum_choices(fields[key]) is None and exc.errors():
                message += f": {exc.errors()[0]['msg']}"
            problems.append(Problem(key_path, message))
            continue
        choices = _enum_choices(fields[key])
        if choices is not None and isinstance(coerced, str) and coerced not in choices:
            problems.append(
                Problem(
                    key_path,
                    f"{coerced!r} is not one of {', '.join(choices)}" + did_you_mean(coerced, choices),
                )
            )
            continue
        if isinstance(coerced, enum.Enum):
            coerced = coerced.value
        problem = value_problem(key, value if isinstance(value, bool) else coerced, fields[key])
        if problem:
            problems.append(Problem(key_path, problem))
            continue
        clean[key] = coerced
    return clean, problems


def installed_default(key: str) -> Any:
    """The installed `TrainingArguments` default of `key` (e.g. per_device_train_batch_size)."""
    return training_defaults()[key]


def house_defaults(varied_lengths: bool, mixes: bool = False) -> dict[str, Any]:
    """Our defaults, applied under the recipe's own `training` values at validation (shown by `check`).

    Args:
        varied_lengths: the inputs vary in length (the recipe reads text columns).
        mixes: mixup/cutmix are on (image augmentation).
    """
    defaults: dict[str, Any] = {
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 2,  # the best checkpoint is always kept on top of this
        "load_best_model_at_end": True,
        "logging_strategy": "steps",
        "logging_steps": 0.02,  # a fraction: about 50 log lines per run, whatever its length
        "report_to": "none",
        "seed": 42,
        "optim": "adamw_torch_fused",  # one fused kernel for the whole update (CPU and GPU)
    }
    if varied_lengths:
        # Batches of similar length waste little compute on padding (dynamic padding does the rest).
        defaults["train_sampling_strategy"] = "group_by_length"
    if mixes:
        defaults["dataloader_drop_last"] = True  # mixing pairs samples within a batch: no odd last batch
    return defaults


def training_problems(t: dict[str, Any], produced: set[str] | None) -> list[Problem]:
    """Combinations of resolved `training` values that TrainingArguments accepts but a run cannot use.

    Args:
        t: the resolved section (house defaults under the user's values).
        produced: the result keys the recipe's metrics produce, loss included (None: metrics invalid).
    """
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
    if metric is not None and produced is not None:
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
