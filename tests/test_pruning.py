"""tune's pruning waits for the learning onset: no trial is judged before the baseline trial beat the trivial model."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")

from hf_finetune.search.onset import BASELINE, TRIVIAL, LearningOnsetPruner, learning_onset, trivial_figure  # noqa: E402

TRIVIAL_F1 = 0.26  # the majority class's macro-F1 on validation


def study_with(pruner) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", pruner=pruner)


def run(study: optuna.Study, curve: list[float], baseline: bool = False, trivial: float | None = TRIVIAL_F1) -> int | None:
    """Reports `curve` one evaluation at a time; returns the evaluation it was pruned at (None: completed)."""
    trial = study.ask()
    if baseline:
        trial.set_user_attr(BASELINE, "the recipe's defaults")
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return step
    trial.set_user_attr(TRIVIAL, trivial)
    study.tell(trial, curve[-1])
    return None


# The defaults sit at the trivial figure for one evaluation, then learn; the late starter is below the
# trivial figure at its first evaluation (it predicts a minority class) and ends best.
DEFAULTS = [TRIVIAL_F1, 0.40, 0.50]
LATE_STARTER = [0.20, 0.45, 0.60]
STUCK = [TRIVIAL_F1, TRIVIAL_F1, TRIVIAL_F1]


def test_plain_successive_halving_prunes_the_late_starter_at_its_first_evaluation():
    study = study_with(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    assert run(study, DEFAULTS, baseline=True) is None
    assert run(study, LATE_STARTER) == 1  # what issue #32 saw: judged before anything was learnt


def test_the_onset_guard_lets_it_learn_and_still_prunes_a_stuck_trial():
    study = study_with(LearningOnsetPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)))
    assert run(study, DEFAULTS, baseline=True) is None
    assert learning_onset(study) == (2, f"trial 0 first beat the trivial model's {TRIVIAL_F1:.4f} at evaluation 2")
    assert run(study, LATE_STARTER) is None  # not judged at evaluation 1; ahead of the defaults at rung 1
    assert run(study, STUCK) == 3  # from the onset on the wrapped pruner decides as before
    assert study.best_trial.number == 1


def test_no_pruning_before_the_reference_finishes_or_when_it_never_learnt():
    study = study_with(LearningOnsetPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)))
    assert learning_onset(study) == (None, "the baseline trial has not finished")
    assert run(study, STUCK, baseline=True) is None
    assert learning_onset(study)[0] is None and "never beat" in learning_onset(study)[1]
    assert run(study, [0.1, 0.1, 0.1]) is None  # nothing tells a learning run from a stuck one: no pruning


def test_an_objective_without_a_trivial_figure_prunes_from_the_first_evaluation():
    study = study_with(LearningOnsetPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)))
    assert run(study, DEFAULTS, baseline=True, trivial=None) is None  # e.g. the validation loss
    assert learning_onset(study)[0] == 1 and run(study, LATE_STARTER) == 1


def test_trivial_figure_reads_the_tasks_baseline_entry():
    report = {"f1": 0.7, "majority_baseline": {"class": "pos", "f1": 0.26, "accuracy": 0.6}}
    assert trivial_figure(report, "f1") == 0.26 and trivial_figure(report, "pearson") is None
    assert trivial_figure({"f1": 0.5, "all_o_baseline": {"f1": 0.0}}, "f1") == 0.0


def test_the_summary_says_which_share_was_pruned_at_which_evaluation():
    from hf_finetune.search.tune import pruned_at

    study = study_with(LearningOnsetPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)))
    run(study, DEFAULTS, baseline=True)
    run(study, LATE_STARTER)
    run(study, STUCK)
    assert pruned_at(study) == ("1 of 3 (33%) at evaluation 3; no trial was pruned before evaluation 2 (trial 0 first "
                                f"beat the trivial model's {TRIVIAL_F1:.4f} at evaluation 2)")
    assert pruned_at(study_with(optuna.pruners.NopPruner())) == ""
