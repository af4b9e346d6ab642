"""The run's own defaults as the search's starting point.

One ordinary run of a recipe trains with the data-aware defaults (training/data_aware.py) for the
keys the recipe leaves unset. A search that ignores them starts from scratch and, in a budget of a
few runs, often ends below that one run. So a new study's trial 0 is the recipe at its defaults
(`search.baseline_trial`), and the default space is centred on them: a search can then only add to
what one run gives, and the random startup trials are spent near values known to work.
"""

from __future__ import annotations

import gc
import logging
import math
from typing import Any

logger = logging.getLogger(__name__)

# The default space around the run's own values: learning rates within 3x either way (the spread
# over which fine-tuning results usually change most), epochs from half to twice the data-aware budget.
RATE_SPREAD = 3.0
EPOCH_SPREAD = 2.0


def run_decisions(recipe: Any) -> list[Any]:
    """The data-aware decisions one ordinary run of `recipe` makes (pipeline.setup's, on one process)."""
    import torch

    from hf_finetune.pipeline import build_data_and_model, data_aware_decisions
    from hf_finetune.tasks import task_of
    from hf_finetune.training.arguments import resolve_training
    from hf_finetune.training.data_aware import hidden_dropout_decision
    from hf_finetune.training.trainer import run_precision

    settings = resolve_training(recipe, log=False)
    data, model, *_ = build_data_and_model(recipe)
    try:
        device = torch.device("cuda" if torch.cuda.is_available() and not settings.training.get("use_cpu") else "cpu")
        dropout = hidden_dropout_decision(recipe, task_of(recipe).inputs, data)  # made while building the model
        return [*([dropout] if dropout else []),
                *data_aware_decisions(recipe, data, model, settings.batch.global_size,
                                      int(settings.training.get("per_device_eval_batch_size", 8)), device,
                                      run_precision(settings.training))]
    finally:
        del model
        gc.collect()


def _lookup(mapping: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = mapping
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def run_values(recipe: Any, keys: list[str]) -> dict[str, Any]:
    """The value one ordinary run of `recipe` trains with for each dotted key that has one: the
    recipe's own, else the data-aware default, else the house or Trainer default.

    Builds the data and the backbone as the run does (the preprocessing is cached, so the first trial
    reads it again), on this process only, and decides as the run decides: a few-label run's k-fold of
    the probe (training/few_label.py) included, so that trial 0 and the pinned strategy are the run's.
    """
    from hf_finetune.training.arguments import installed_default, resolve_training
    from hf_finetune.training.data_aware import apply_decisions

    resolved = recipe
    if recipe.finetune.data_aware:
        resolved = apply_decisions(recipe, run_decisions(recipe))
    training = resolve_training(resolved, log=False).training
    mapping = resolved.to_dict()
    mapping["training"] = training
    out: dict[str, Any] = {}
    for key in keys:
        found, value = _lookup(mapping, key)
        if not found and key.startswith("training."):
            try:
                found, value = True, installed_default(key.split(".", 1)[1])
            except KeyError:
                found = False
        if not found and key == "finetune.head_learning_rate":
            found, value = True, None
        if found and value is None and key == "model.attention_dropout":
            from hf_finetune.models.attention import FINE_TUNING_ATTENTION_DROPOUT

            value = FINE_TUNING_ATTENTION_DROPOUT  # what the backbone is built with (models/attention.py)
        if found:
            out[key] = value
    return out


# Keys that decide what trains: the run's choice (a probe on few labels) is every trial's, so that a
# trial's own learning rate or epochs never turn a probe into a full fine-tune at a probe's rate.
STRATEGY_KEYS = ("finetune.strategy", "finetune.cache_features")


def pin_strategy(recipe: Any, raw: dict[str, Any], values: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(recipe, raw recipe dict) with the strategy the run's defaults chose written in, when they chose one."""
    chosen = {key.split(".", 1)[1]: values[key] for key in STRATEGY_KEYS
              if key in values and key.split(".", 1)[1] not in recipe.finetune.model_fields_set}
    chosen = {k: v for k, v in chosen.items() if getattr(recipe.finetune, k) != v}
    if not chosen:
        return recipe, raw
    logger.info("The run's defaults train with %s: every trial does the same",
                ", ".join(f"finetune.{k} = {v}" for k, v in chosen.items()))
    raw = {**raw, "finetune": {**(raw.get("finetune") or {}), **chosen}}
    return recipe.model_copy(update={"finetune": recipe.finetune.model_copy(update=chosen)}), raw


def _short(x: float) -> float:
    """Three significant digits: the printed space reads 3.33e-05, not 3.3333333333333335e-05."""
    return float(f"{x:.3g}")


def is_primitive(value: Any) -> bool:
    """A value Optuna stores as it is (other choices are stored as their JSON text)."""
    return value is None or isinstance(value, (bool, int, float, str))


def centred_space(space: dict[str, dict[str, Any]], values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The default space moved around the run's own values, so that they lie inside it."""
    out = {key: dict(dim) for key, dim in space.items()}
    rate = values.get("training.learning_rate")
    if isinstance(rate, (int, float)) and rate > 0:
        out["training.learning_rate"] = {"low": _short(rate / RATE_SPREAD), "high": _short(rate * RATE_SPREAD),
                                         "log": True}
    head = values.get("finetune.head_learning_rate")
    if "finetune.head_learning_rate" in out and isinstance(head, (int, float)) and head > 0:
        out["finetune.head_learning_rate"] = {"low": _short(head / RATE_SPREAD),
                                              "high": _short(min(head * RATE_SPREAD, 0.1)), "log": True}
    epochs = values.get("training.num_train_epochs")
    if isinstance(epochs, (int, float)) and epochs >= 1:
        e = int(round(epochs))
        out["training.num_train_epochs"] = {"low": max(1, math.ceil(e / EPOCH_SPREAD)),
                                            "high": max(e + 1, int(e * EPOCH_SPREAD))}
    for key, dim in out.items():  # a choice the run would make itself is one of the choices
        if "choices" in dim and key in values and values[key] not in dim["choices"]:
            dim["choices"] = [values[key], *dim["choices"]]
    warmup = values.get("training.warmup_steps")
    if "training.warmup_steps" in out and isinstance(warmup, (int, float)) and warmup > out[
            "training.warmup_steps"]["high"]:
        out["training.warmup_steps"] = {"low": 0 if warmup >= 1 else 0.0, "high": warmup * 2}
    return out


def _fits(dim: Any, value: Any) -> bool:
    if dim.choices is not None:
        return value in dim.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if dim.is_int and float(value) != int(value):
        return False
    return dim.low <= value <= dim.high


def baseline_params(space: dict[str, Any], values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the run's values as Optuna parameters of `space`, the keys whose value the space cannot take).

    Choices that are not plain values are stored by Optuna as their JSON text (as `suggest` does).
    """
    import json

    params: dict[str, Any] = {}
    misses = []
    for key, dim in space.items():
        if key not in values or not _fits(dim, values[key]):
            misses.append(key)
            continue
        value = values[key]
        if dim.choices is not None and not all(is_primitive(c) for c in dim.choices):
            value = json.dumps(value)
        elif dim.is_int:
            value = int(value)
        params[key] = value
    return params, misses
