"""The task layer: one module per task, each the one home of what differs between tasks.

    base.py                  Task and Inputs: the interface the pipeline and the commands ask
    text.py, image.py        what every task on texts / on images shares (columns, preprocessing, backbones)
    classification.py        single-label classification: head, metrics, baseline
    text_classification.py   task: text-classification
    image_classification.py  task: image-classification

A new task is one new module here, registered in `TASKS`; nothing else branches on the task.
"""

from __future__ import annotations

from typing import Any

from hf_finetune.errors import Problem, RecipeError
from hf_finetune.tasks import image_classification, text_classification
from hf_finetune.tasks.base import CAPABILITIES, Inputs, Preprocessing, Task

TASKS: dict[str, Task] = {t.name: t for t in (text_classification.TASK, image_classification.TASK)}

__all__ = ["CAPABILITIES", "TASKS", "Inputs", "Preprocessing", "Task", "capabilities_used", "check_capabilities",
           "get_task", "require", "task_for_model", "task_of"]


def get_task(name: str) -> Task:
    """The task of a recipe's `task` key (or a finished run's recipe.yaml)."""
    try:
        return TASKS[name]
    except KeyError:
        raise RecipeError([Problem("task", f"unknown task '{name}'; tasks: {', '.join(TASKS)}")]) from None


def task_for_model(config: dict[str, Any]) -> Task:
    """The task a bare model folder (config.json, no run.json) is taken for: the first that reads its inputs."""
    return next(task for task in TASKS.values() if task.inputs.recognises(config))


def task_of(recipe: Any) -> Task:
    """The task of a validated Recipe."""
    return get_task(recipe.task)


def capabilities_used(recipe: Any) -> dict[str, str]:
    """capability -> the recipe key that asks for it (commands add their own: tune, rank, ensemble...)."""
    used: dict[str, str] = {}
    strategy = recipe.finetune.strategy
    if strategy in CAPABILITIES:
        used[strategy] = "finetune.strategy"
    if recipe.finetune.layer_decay is not None:
        used["layer_decay"] = "finetune.layer_decay"
    if recipe.finetune.cache_features:
        used["cache_features"] = "finetune.cache_features"
    if recipe.distill.teacher is not None:
        used["distill"] = "distill.teacher"
    if recipe.self_training is not None:
        used["self_training"] = "self_training"
    return used


def require(task_name: str, capability: str, where: str) -> None:
    """Raises a UserError when the task of a finished run (`where`: its folder, for the message) does not
    serve `capability` (a command run on a finished run: export, ensemble, soup...)."""
    from hf_finetune.errors import UserError

    task = get_task(task_name)
    if not task.supports(capability):
        raise UserError(f"{where}: task {task.name} does not support {capability.replace('_', ' ')}; it supports: "
                        f"{', '.join(sorted(task.capabilities)) or 'none'}")


def check_capabilities(recipe: Any, command: str | None = None) -> None:
    """Raises a RecipeError naming the task and every capability the recipe (or `command`) asks of it
    that the task does not serve."""
    task = task_of(recipe)
    used = capabilities_used(recipe)
    if command is not None:
        used[command] = command
    problems = [Problem(key, f"task {task.name} does not support {capability.replace('_', ' ')}; it supports: "
                        f"{', '.join(sorted(task.capabilities)) or 'none'}")
                for capability, key in used.items() if not task.supports(capability)]
    if problems:
        raise RecipeError(problems, getattr(recipe, "source", None))
