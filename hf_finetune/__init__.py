"""hf-finetune: fine-tune text and vision backbones from one YAML recipe on Trainer + Accelerate.

The Python face, for notebooks and scripts (the CLI does the same through these functions):

    import hf_finetune

    result = hf_finetune.train("recipes/quickstart_text.yaml", training__learning_rate=3e-5)
    result.output_dir, result.metrics["test"]["f1"]

    recipe = hf_finetune.check({"task": "text-classification", "model": {...}, "data": {...}})

Overrides are keyword arguments: `__` stands for a dot (`training__learning_rate`), or pass dotted
names with `**{"training.learning_rate": 3e-5}`. Values are Python values. Every mistake raises the
`RecipeError` (or another `UserError`) that the CLI prints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hf_finetune.version import __version__

if TYPE_CHECKING:
    from hf_finetune.pipeline import RunResult
    from hf_finetune.recipe import Recipe

__all__ = ["__version__", "check", "load_recipe", "run_recipe", "train"]


def load_recipe(recipe: str | os.PathLike | Mapping[str, Any], **overrides: Any) -> Recipe:
    """A validated recipe from a YAML file or a mapping, with overrides applied.

    Args:
        recipe: a recipe file path, or the recipe as a mapping (as the YAML would parse).
        **overrides: recipe keys to set, `__` for a dot (`training__num_train_epochs=2`).

    Raises:
        RecipeError: listing every problem, each with its dotted key path.
    """
    from hf_finetune.capability_checks import RECIPE_CHECKS
    from hf_finetune.errors import RecipeError
    from hf_finetune.recipe import validate_recipe
    from hf_finetune.recipe.loading import apply_values, read_yaml

    source = None if isinstance(recipe, Mapping) else str(recipe)
    raw = dict(recipe) if isinstance(recipe, Mapping) else read_yaml(recipe)
    try:
        raw = apply_values(raw, overrides)
    except RecipeError as exc:
        raise RecipeError(exc.problems, source) from None
    shown = [f"{key.replace('__', '.')}={value}" for key, value in overrides.items()]
    return validate_recipe(raw, source, shown, checks=RECIPE_CHECKS)


def check(recipe: str | os.PathLike | Mapping[str, Any], *, data: bool = True, **overrides: Any) -> Recipe:
    """Validates a recipe as `hf-finetune check` does, and returns it resolved.

    Args:
        recipe: a recipe file path or mapping.
        data: also run the pre-flight (columns, labels, sample images, model name, metrics); False
            checks the recipe alone, as `--schema-only`.
        **overrides: recipe keys to set, `__` for a dot.

    Raises:
        UserError: RecipeError for the recipe, DataError / ModelError for what pre-flight finds.
    """
    from hf_finetune.preflight import check_output_folder
    from hf_finetune.training.arguments import check_training_arguments

    resolved = load_recipe(recipe, **overrides)
    check_training_arguments(resolved)
    check_output_folder(resolved)
    if data:
        from hf_finetune.preflight import preflight

        preflight(resolved)
    return resolved


def train(recipe: str | os.PathLike | Mapping[str, Any], *, resume: bool = False, **overrides: Any) -> RunResult:
    """Fine-tunes as `hf-finetune train` does and returns the run's result.

    Args:
        recipe: a recipe file path or mapping.
        resume: continue from the newest complete checkpoint in `<output.dir>/checkpoints`.
        **overrides: recipe keys to set, `__` for a dot.

    Returns:
        `RunResult` with `output_dir` (the finished run's folder) and `metrics` (metrics.json).

    Raises:
        UserError: what the CLI would print (RecipeError, DataError, TrainingAborted...).
    """
    return run_recipe(load_recipe(recipe, **overrides), resume=resume)


def run_recipe(recipe: Recipe, *, resume: bool = False) -> RunResult:
    """Trains a validated recipe: the pipeline's run, or self-training's rounds around it; then, with
    hub.push, uploads the published folder from the main process (the others need not wait for it).

    Raises:
        UserError: what the run raises; PushError when the upload fails (it says the local output is complete).
    """
    from hf_finetune.outputs.lock import is_main_process

    if recipe.self_training is not None:
        from hf_finetune.selftrain import run as run_self_training

        result = run_self_training(recipe, resume=resume)
    else:
        from hf_finetune.pipeline import run

        result = run(recipe, resume=resume)
    if recipe.hub.push and result.published and is_main_process():
        from hf_finetune.finished.push import push_output

        push_output(result.output_dir, recipe.hub.repo_id, private=recipe.hub.private, revision=recipe.hub.revision)
    return result
