"""The search space: which recipe keys a trial sets, checked before any trial runs, and sampled per trial.

A space maps dotted recipe keys to a `SearchDimension` (`{low, high, log, step}` or `{choices}`).
Without a `search.space`, `default_space` gives one suited to fine-tuning. No Optuna import here:
recipe validation uses these checks too.
"""

from __future__ import annotations

import json
from typing import Any

from hf_finetune.errors import Problem, show
from hf_finetune.metrics.names import metric_keys

# Keys a trial may not take from the space: the search sets them itself, or they are not per trial.
OWNED_BY_SEARCH = {
    "output": "each trial writes into its own folder under output.dir",
    "hub": "trials are never pushed; push the best model with `hf-finetune push OUTPUT_DIR/best`",
    "search": "the search settings are not searched",
    "training.metric_for_best_model": "each trial selects its checkpoint on the objective; set "
                                      "search.objective.metric instead",
    "training.greater_is_better": "follows the objective; set search.objective.direction instead",
    "training.resume_from_checkpoint": "trials always start from the beginning",
}

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
        from hf_finetune.search.defaults import centred_space

        space = centred_space(space, run_values)
    return {k: SearchDimension(**v) for k, v in space.items()}, True


def space_yaml(space: dict[str, Any]) -> str:
    """The space as a `search:` section to paste into a recipe."""
    import yaml

    rows = {key: dim.model_dump(exclude_defaults=True) if hasattr(dim, "model_dump") else dim
            for key, dim in space.items()}
    return yaml.safe_dump({"search": {"space": rows}}, sort_keys=False, default_flow_style=None)


def _is_primitive(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Recipe values for one trial, sampled by Optuna's `trial.suggest_*` (parameter name = recipe key)."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.choices is not None:
            if all(_is_primitive(c) for c in dim.choices):
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
        coded = dim is not None and dim.choices is not None and not all(_is_primitive(c) for c in dim.choices)
        out[key] = json.loads(value) if coded and isinstance(value, str) else value
    return out


# --- checks before any trial runs -------------------------------------------------------------------------

def objective_problems(metric: Any, pruner: str | None, metrics: list[str],
                       training: dict[str, Any] | None) -> list[Problem]:
    """The objective names a metric this run produces; a pruner needs evaluations during training."""
    problems = []
    if isinstance(metric, str):
        produced = metric_keys(metrics) | {"loss"}
        bare = metric.removeprefix("eval_").removeprefix("validation_")
        if bare not in produced:
            from hf_finetune.errors import did_you_mean

            problems.append(Problem("search.objective.metric",
                                    f"'{metric}' is not produced by this run; it produces "
                                    f"{', '.join(sorted(produced))}" + did_you_mean(bare, produced)))
    if training is not None and pruner not in (None, "none") and str(training.get("eval_strategy")) == "no":
        problems.append(Problem("search.pruner.type", f"'{pruner}' prunes at evaluations, and "
                                "training.eval_strategy is 'no'; evaluate during training or set none"))
    return problems


def space_key_problems(space: dict[str, Any]) -> list[Problem]:
    """Every searched key names a recipe key (did-you-mean otherwise) that the search does not own."""
    from hf_finetune.recipe.loading import _check_override_path

    problems = []
    for key in space:
        parts = key.split(".")
        where = f"search.space.{key}"
        owned = next((why for name, why in OWNED_BY_SEARCH.items() if key == name or key.startswith(name + ".")),
                     None)
        if owned:
            problems.append(Problem(where, f"cannot be searched: {owned}"))
            continue
        message = _check_override_path(parts) if all(parts) else "not a dotted recipe key"
        if message:
            problems.append(Problem(where, f"not a recipe key ({message})"))
    return problems


def endpoint_values(dim: Any) -> list[tuple[str, Any]]:
    """The values a dimension can reach at its edges: (label, value) for low, high or each choice."""
    if dim.choices is not None:
        return [(f"choices[{i}]", c) for i, c in enumerate(dim.choices)]
    return [("low", dim.low), ("high", dim.high)]


def endpoint_problems(raw: dict[str, Any], space: dict[str, Any], source: str | None) -> list[Problem]:
    """Each edge of each dimension, set alone on the recipe, must give a valid recipe (e.g. a batch size of 0
    or a strategy name that does not exist is found here, before any trial)."""
    from hf_finetune.errors import RecipeError
    from hf_finetune.recipe.loading import apply_values
    from hf_finetune.recipe.validation import validate_recipe

    base = {k: v for k, v in raw.items() if k != "search"}
    problems = []
    for key, dim in space.items():
        for label, value in endpoint_values(dim):
            try:
                validate_recipe(apply_values(base, {key: value}), source)
            except RecipeError as exc:
                for p in exc.problems:
                    at = f" ({p.path}: {p.message})" if p.path and p.path != key else f" ({p.message})"
                    problems.append(Problem(f"search.space.{key}.{label}", f"{show(value)} gives an invalid "
                                            f"recipe{at}"))
    return problems


def search_problems(raw: dict[str, Any], search: Any, metrics: list[str] | None,
                    training: dict[str, Any] | None) -> list[Problem]:
    """The checks of a `search:` section that need the rest of the recipe (key paths under search.).

    They run even when the section itself has other mistakes (`search` None), on its raw values, so
    that one error lists them all.
    """
    from hf_finetune.recipe.schema import SearchSpec

    section = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    space = SearchSpec._dotted_keys(section.get("space")) if search is None else (search.space or {})
    problems = space_key_problems(space if isinstance(space, dict) else {})
    objective = section.get("objective") if isinstance(section.get("objective"), dict) else {}
    pruner = search.pruner.type if search is not None else None
    metric = search.objective.metric if search is not None else objective.get("metric")
    problems += objective_problems(metric, pruner, metrics or [], training)
    return problems
