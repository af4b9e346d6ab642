"""The search space: which recipe keys a trial sets, checked before any trial runs, and sampled per trial.

A space maps dotted recipe keys to a `SearchDimension` (`{low, high, log, step}` or `{choices}`).
Without a `search.space`, `default_space` gives one suited to fine-tuning. No Optuna import here. The
checks of a recipe's own space (searched keys, objective, each edge) are the recipe's (recipe/cross.py).
"""

from __future__ import annotations

import json
from typing import Any

from hf_finetune.errors import Problem
from hf_finetune.search.defaults import centred_space, is_primitive

# The default space: what matters most when fine-tuning on small data (learning rates, epochs, batch
# size, warmup, class weights). These ranges span the data-aware defaults of every backbone family
# (text encoders 2e-5..1e-4, CNNs 1e-3, head 10x the backbone, warmup 0.1 of the steps; see
# training/data_aware.py); `tune` centres them on this recipe's own values (search/defaults.py).
DEFAULT_EPOCHS = (2, 10)
DEFAULT_BATCH_SIZES = [8, 16, 32]


def default_space(recipe: Any) -> dict[str, dict[str, Any]]:
    """The fine-tuning space used when the recipe has no `search.space`, as the YAML a user would write."""
    from hf_finetune.tasks import get_task

    low, high = get_task(recipe.task).inputs.tune_learning_rates
    space: dict[str, dict[str, Any]] = {
        "training.learning_rate": {"low": low, "high": high, "log": True},
    }
    if recipe.finetune.strategy != "linear_probe":  # a probe trains the head alone, at training.learning_rate
        space["finetune.head_learning_rate"] = {"low": 1e-4, "high": 1e-2, "log": True}
    space["training.num_train_epochs"] = {"low": DEFAULT_EPOCHS[0], "high": DEFAULT_EPOCHS[1]}
    batch_key = "batch.global_size" if recipe.batch.global_size is not None else "training.per_device_train_batch_size"
    space[batch_key] = {"choices": list(DEFAULT_BATCH_SIZES)}
    space["training.warmup_steps"] = {"low": 0.0, "high": 0.2}  # a share of all steps (below 1)
    space["finetune.class_weights"] = {"choices": [None, "balanced"]}
    return space


def resolve_space(recipe: Any, run_values: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
    """(space as {key: SearchDimension}, whether it is the default one).

    `run_values`: what one ordinary run trains with (search/defaults.run_values); the default space is
    then centred on them.
    """
    from hf_finetune.recipe.schema import SearchDimension

    if recipe.search.space:
        return dict(recipe.search.space), False
    space = default_space(recipe)
    if run_values:
        space = centred_space(space, run_values)
    return {k: SearchDimension(**v) for k, v in space.items()}, True


def space_yaml(space: dict[str, Any]) -> str:
    """The space as a `search:` section to paste into a recipe."""
    import yaml

    rows = {key: dim.model_dump(exclude_defaults=True) if hasattr(dim, "model_dump") else dim
            for key, dim in space.items()}
    return yaml.safe_dump({"search": {"space": rows}}, sort_keys=False, default_flow_style=None)


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Recipe values for one trial, sampled by Optuna's `trial.suggest_*` (parameter name = recipe key)."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.choices is not None:
            if all(is_primitive(c) for c in dim.choices):
                values[key] = trial.suggest_categorical(key, dim.choices)
            else:  # lists or mappings (class weights): Optuna stores their JSON text
                values[key] = json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in dim.choices]))
        elif dim.is_int:
            values[key] = trial.suggest_int(key, dim.low, dim.high, step=dim.step or 1, log=dim.log)
        else:
            values[key] = trial.suggest_float(key, dim.low, dim.high, step=dim.step, log=dim.log)
    return values


def decode_params(params: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    """Recipe values from a finished trial's stored parameters (JSON-coded choices decoded)."""
    out = {}
    for key, value in params.items():
        dim = space.get(key)
        coded = dim is not None and dim.choices is not None and not all(is_primitive(c) for c in dim.choices)
        out[key] = json.loads(value) if coded and isinstance(value, str) else value
    return out


def endpoint_problems(raw: dict[str, Any], space: dict[str, Any], source: str | None) -> list[Problem]:
    """Each edge of each dimension of `space` (the default space, resolved by tune), set alone on the recipe,
    must give a valid recipe; checked as the recipe checks its own search.space (recipe/cross.py)."""
    from hf_finetune.capability_checks import RECIPE_CHECKS
    from hf_finetune.recipe import cross
    from hf_finetune.recipe.validation import validate_recipe

    return cross.endpoint_problems(raw, space, lambda edge: validate_recipe(edge, source, checks=RECIPE_CHECKS))
