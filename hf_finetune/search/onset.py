"""Pruning that waits until runs have started to learn (issue #32).

On small data every run sits at the trivial model's figure (the majority class's macro-F1) for its
first evaluation or two. Successive halving at the first rung then compares trials before any of
them has learned, and keeps only those that happen to leave the baseline early: on a 600-review
sentiment set, 5 of 8 trials were pruned at their first evaluation with exactly the majority-class
F1, and the search found nothing better than its first trial.

`LearningOnsetPruner` wraps the study's pruner. The reference is the baseline trial (the recipe at
its own defaults, trial 0 of a new study; else the first completed trial): its learning onset is the
first evaluation at which its objective beat the trivial model's validation figure (recorded by each
trial as the user attribute `trivial`). No trial is pruned before that evaluation, nor at all while
the reference has not finished; a reference that never beat the trivial figure turns pruning off,
since then no evaluation tells a learning run from a stuck one. From the onset on, the wrapped pruner
decides as before.
"""

from __future__ import annotations

from typing import Any

from optuna.pruners import BasePruner

TRIVIAL = "trivial"  # trial user attribute: the trivial model's validation figure of the objective
BASELINE = "baseline"  # trial user attribute of the enqueued trial 0 (search/tune.enqueue_baseline)


def reference_trial(study: Any) -> Any | None:
    """The trial whose evaluations set the learning onset: the baseline trial, else the first completed one
    (with its trivial figure recorded); None while none has finished."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and TRIVIAL in t.user_attrs]
    return min(complete, key=lambda t: (BASELINE not in t.user_attrs, t.number)) if complete else None


def learning_onset(study: Any) -> tuple[int | None, str]:
    """(first evaluation at which the reference trial beat the trivial figure, or None: no pruning yet;
    why), from the study's trials."""
    reference = reference_trial(study)
    if reference is None:
        return None, "the baseline trial has not finished"
    if not isinstance(reference.user_attrs[TRIVIAL], (int, float)):  # the validation loss: no trivial model's figure
        return 1, "the objective has no trivial model's figure: pruning from the first evaluation"
    trivial = float(reference.user_attrs[TRIVIAL])
    maximize = study.direction.name == "MAXIMIZE"
    tolerance = 1e-6 * max(1.0, abs(trivial))
    for step, value in sorted(reference.intermediate_values.items()):
        if (value > trivial + tolerance) if maximize else (value < trivial - tolerance):
            return step, f"trial {reference.number} first beat the trivial model's {trivial:.4f} at evaluation {step}"
    return None, f"trial {reference.number} never beat the trivial model's {trivial:.4f}"


class LearningOnsetPruner(BasePruner):
    """The wrapped pruner, from the reference trial's learning onset on (module docstring)."""

    def __init__(self, wrapped: BasePruner):
        self.wrapped = wrapped

    def prune(self, study: Any, trial: Any) -> bool:
        step = trial.last_step
        if step is None:
            return False
        # Always asked first: successive halving records each trial's value at its rungs as it goes, and
        # the later trials are compared with the reference's recorded values.
        if not self.wrapped.prune(study, trial):
            return False
        onset, _ = learning_onset(study)
        return onset is not None and step >= onset


def trivial_figure(split_report: dict[str, Any], metric: str) -> float | None:
    """The trivial model's figure of `metric` in one split's report (metrics.json): the value under the
    task's baseline entry (`majority_baseline` for classification, the all-O tagger for entities...)."""
    for key, value in split_report.items():
        if key.endswith("baseline") and isinstance(value, dict) and isinstance(value.get(metric), (int, float)):
            return float(value[metric])
    return None
