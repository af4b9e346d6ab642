"""The task layer: one module per task, each the one home of what differs between tasks.

    base.py                  Task and Inputs: the interface the pipeline and the commands ask
    text.py, image.py        what every task on texts / on images shares (columns, preprocessing, backbones)
    classification.py        single-label classification: head, metrics, baseline
    text_classification.py   task: text-classification
    image_classification.py  task: image-classification
    tags.py, tag_labels.py   tag schemes; the label space of tagged words
    token_classification.py  task: token-classification
    targets.py               the target space of regression: numeric columns, standardised
    regression.py            tasks: text-regression, image-regression
    segmentation.py          task: semantic-segmentation (masks: data/masks.py; UperNet: models/segmentation.py)
    label_sets.py            the label space of label sets (a list, a delimited string or 0/1 columns per row)
    multi_label.py           tasks: text-multi-label, image-multi-label (sigmoid per label, BCE, tuned thresholds)

A new task is one new module here, registered in `TASKS`; nothing else branches on the task.
"""

from __future__ import annotations

from typing import Any

from hf_finetune.errors import Problem, RecipeError
from hf_finetune.tasks import (
    image_classification,
    multi_label,
    regression,
    segmentation,
    text_classification,
    token_classification,
)
from hf_finetune.tasks.base import CAPABILITIES, Inputs, Preprocessing, Task, TaskProblem

TASKS: dict[str, Task] = {t.name: t for t in (text_classification.TASK, image_classification.TASK,
                                              token_classification.TASK, multi_label.TEXT_TASK,
                                              multi_label.IMAGE_TASK, regression.TEXT_TASK,
                                              regression.IMAGE_TASK, segmentation.TASK)}

__all__ = ["CAPABILITIES", "TASKS", "Inputs", "Preprocessing", "Task", "TaskProblem", "capabilities_used",
           "capability_problems", "check_capabilities", "get_task", "require", "task_for_model", "task_of"]


def get_task(name: str) -> Task:
    """The task of a recipe's `task` key (or a finished run's recipe.yaml)."""
    try:
        return TASKS[name]
    except KeyError:
        raise RecipeError([Problem("task", f"unknown task '{name}'; tasks: {', '.join(TASKS)}")]) from None


def task_for_model(config: dict[str, Any]) -> Task:
    """The task a bare model folder (config.json, no run.json) is taken for: among the tasks that read its
    inputs, those whose problem its config.problem_type names (unset: single-label, as transformers' heads
    read it), then the one whose model class its architectures name (BertForTokenClassification)."""
    readers = [task for task in TASKS.values() if task.inputs.recognises(config)]
    wanted = config.get("problem_type") or "single_label_classification"
    readers = [t for t in readers if t.problem.problem_type in (wanted, None)] or readers
    heads = {str(a) for a in config.get("architectures") or ()}
    named = [t for t in readers if any(a.endswith(t.auto_model.removeprefix("AutoModel")) for a in heads)]
    return (named or readers)[0]


def task_of(recipe: Any) -> Task:
    """The task of a validated Recipe."""
    return get_task(recipe.task)


def capabilities_used(finetune: Any, distill: Any, self_training: Any) -> dict[str, str]:
    """capability -> the recipe key that asks for it, from the recipe's sections (commands add their own:
    tune, rank, ensemble...)."""
    used: dict[str, str] = {}
    if finetune is not None:
        if finetune.strategy in CAPABILITIES:
            used[finetune.strategy] = "finetune.strategy"
        if finetune.layer_decay is not None:
            used["layer_decay"] = "finetune.layer_decay"
        if finetune.cache_features:
            used["cache_features"] = "finetune.cache_features"
    if distill is not None and distill.teacher is not None:
        used["distill"] = "distill.teacher"
    if self_training is not None:
        used["self_training"] = "self_training"
    return used


def _refusals(task: Task, used: dict[str, str]) -> list[Problem]:
    return [Problem(key, f"task {task.name} does not support {capability.replace('_', ' ')}; it supports: "
                    f"{', '.join(sorted(task.capabilities)) or 'none'}")
            for capability, key in used.items() if not task.supports(capability)]


def capability_problems(sections: Any) -> list[Problem]:
    """A recipe check (hf_finetune.capability_checks): every capability the recipe's sections ask of its
    task that the task does not serve, each at the key that asks for it.

    Args:
        sections: the recipe's validated sections by name (None or absent where invalid or not given).
    """
    task = TASKS.get(sections.get("task"))
    if task is None:
        return []
    return _refusals(task, capabilities_used(sections.get("finetune"), sections.get("distill"),
                                             sections.get("self_training")))


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
    used = capabilities_used(recipe.finetune, recipe.distill, recipe.self_training)
    if command is not None:
        used[command] = command
    problems = _refusals(task, used)
    if problems:
        raise RecipeError(problems, getattr(recipe, "source", None))
