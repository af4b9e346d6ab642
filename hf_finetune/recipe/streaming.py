"""`data.streaming`: what a recipe that streams its data must say, and what a stream cannot serve.

A stream has no length and is read once per pass, in order, as training takes its rows: training is
budgeted in optimizer steps, evaluations and checkpoints come every so many steps, and everything that
reads a whole split before training (cached features, a teacher's cached outputs, a pool of unlabelled
rows, a search's data-aware space) is refused here, naming the key, before anything loads.
"""

from __future__ import annotations

from typing import Any

from hf_finetune.errors import Problem

STREAM_TASKS = ("text-classification", "image-classification")
# evaluations and checkpoints every fifth of training.max_steps (a fraction of the steps, as Trainer reads it)
STREAM_EVAL_STEPS = 0.2


def stream_training_defaults() -> dict[str, Any]:
    """The house `training` defaults of a streamed run (under the user's values): steps, not epochs."""
    return {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": STREAM_EVAL_STEPS,
            "save_steps": STREAM_EVAL_STEPS}


def streaming_problems(raw: dict[str, Any], parts: dict[str, Any]) -> list[Problem]:
    """Every key of a streamed recipe that a stream cannot serve, and the stream keys of a recipe that does
    not stream.

    Args:
        raw: the recipe mapping as written (the user's own `training` keys are read from it).
        parts: the validated sections (None where invalid); `training` resolved (house defaults included).
    """
    data = parts.get("data")
    if data is None:
        return []
    if not data.streaming:  # a resolved recipe.yaml writes the defaults: only a changed value is a mistake
        return [Problem(f"data.{key}", "only applies with data.streaming: true")
                for key in ("shuffle_buffer", "head_rows")
                if getattr(data, key) != type(data).model_fields[key].default]
    problems: list[Problem] = []
    task = parts.get("task")
    if task is not None and task not in STREAM_TASKS:
        problems.append(Problem("data.streaming", f"serves tasks {' and '.join(STREAM_TASKS)}; task {task} reads "
                                                  "its data whole (set data.streaming: false)"))
    user = raw.get("training") if isinstance(raw.get("training"), dict) else {}
    if user.get("max_steps") in (None, -1):
        problems.append(Problem("training.max_steps", "data.streaming: a stream has no known length, so the run is "
                                                      "budgeted in optimizer steps: set training.max_steps (e.g. 1000)"))
    if "num_train_epochs" in user:
        problems.append(Problem("training.num_train_epochs", "means nothing on a stream of unknown length "
                                                             "(data.streaming): budget the run with training.max_steps"))
    training = parts.get("training") or {}
    for key in ("eval_strategy", "save_strategy"):
        if str(training.get(key)) == "epoch":
            problems.append(Problem(f"training.{key}", "'epoch' never ends on a stream (it cycles until "
                                                       "training.max_steps): use 'steps'"))
    if (user.get("dataloader_num_workers") or 0) > 0:
        problems.append(Problem("training.dataloader_num_workers", "data.streaming reads the stream in the training "
                                "process, where its position is saved with each checkpoint for resuming: set 0"))
    if str(user.get("train_sampling_strategy", "random")) != "random":
        problems.append(Problem("training.train_sampling_strategy", "a stream is read in order (after its seeded "
                                "shuffle buffer, data.shuffle_buffer): no sampler applies"))
    # (the default share, which a resolved recipe.yaml writes, is named at run time if validation must be carved)
    if data.validation_size < 1 and data.validation_size != type(data).model_fields["validation_size"].default:
        problems.append(Problem("data.validation_size", "a share of a stream of unknown length: give a row count "
                                                        "(>= 1), taken from the head of the training stream"))
    if data.num_proc is not None:
        problems.append(Problem("data.num_proc", "a stream is preprocessed on the fly, in the training process"))
    if data.unlabeled is not None:
        problems.append(Problem("data.unlabeled", "self-training predicts on a whole pool; data.streaming "
                                                  "does not serve it"))
    ft = parts.get("finetune")
    if ft is not None and ft.cache_features:
        problems.append(Problem("finetune.cache_features", "computes the features of whole splits once; "
                                                           "data.streaming does not serve it"))
    distill = parts.get("distill")
    if distill is not None and distill.teacher is not None:
        problems.append(Problem("distill.teacher", "distillation reads the teacher's outputs over the whole "
                                                   "training split; data.streaming does not serve it"))
    for section in ("self_training", "search", "rank"):
        if raw.get(section) is not None:
            problems.append(Problem(section, "reads whole splits; data.streaming does not serve it "
                                             "(set data.streaming: false)"))
    return problems
