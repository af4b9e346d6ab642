"""The majority-class baseline beside every score, and the collapse guard (with guessing by the class
frequencies as a second bar).

On imbalanced data a model that always predicts the largest class reaches that class's share in
accuracy while learning nothing. Every report therefore carries what that trivial model scores, and
a run whose selected model predicts (almost) one class, or is no better than the trivial model on
macro-F1, says so at the end and in the card, with what to try.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ONE_CLASS_SHARE = 0.95  # the model predicts one class for at least this share of the rows
F1_MARGIN = 0.02  # macro-F1 within this of the trivial model's counts as no better


def majority_baseline(report: dict[str, Any], train_counts: list[int]) -> dict[str, Any]:
    """What always predicting the training set's largest class scores on this split (macro averages)."""
    matrix = np.asarray(report["confusion_matrix"]["matrix"], dtype=float)
    labels = report["confusion_matrix"]["labels"]
    k, total = len(labels), matrix.sum()
    majority = int(np.argmax(train_counts))
    share = matrix[majority].sum() / total if total else 0.0
    f1 = 2 * share / (1 + share) if share else 0.0
    return {"class": labels[majority], "accuracy": share, "precision": share / k, "recall": 1 / k if share else 0.0,
            "f1": f1 / k}


def guessing_baseline(report: dict[str, Any], train_counts: list[int]) -> dict[str, float]:
    """What guessing each row's class at its training share scores on this split, in expectation: a class
    guessed at share q with true share p has precision p and recall q (macro averages over every label).

    The majority class is a weak bar for macro-F1: on 10 balanced classes it scores 0.018, where guessing scores
    0.10. Issue #34's first few-label run scored macro-F1 0.218 on 3 sentiment classes, above the majority's
    0.167 (no collapse warning), and below guessing's 0.33."""
    matrix = np.asarray(report["confusion_matrix"]["matrix"], dtype=float)
    total, counts = matrix.sum(), np.asarray(train_counts, dtype=float)
    if not total or not counts.sum() or len(counts) != len(matrix):
        return {}
    p, q = matrix.sum(axis=1) / total, counts / counts.sum()
    f1 = np.divide(2 * p * q, p + q, out=np.zeros_like(p), where=(p + q) > 0)
    return {"accuracy": float((p * q).sum()), "f1": float(f1.mean())}


def majority_figure(train_labels: Any, validation_labels: Any, num_classes: int, metric: str) -> float | None:
    """What always predicting the training set's largest class scores in `metric` on the validation labels (the
    figure `majority_baseline` reports after a run); None for a metric it does not report (the loss)."""
    train_counts = np.bincount(np.asarray(train_labels, dtype=int), minlength=num_classes)
    true = np.bincount(np.asarray(validation_labels, dtype=int), minlength=num_classes)
    matrix = np.zeros((num_classes, num_classes))
    matrix[:, int(np.argmax(train_counts))] = true  # rows: the true class; every prediction the majority's
    report = {"confusion_matrix": {"matrix": matrix.tolist(), "labels": list(range(num_classes))}}
    value = majority_baseline(report, train_counts.tolist()).get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def margin_bar(trivial: float, sign: float = 1.0) -> float:
    """The figure a model must pass to count as better than the trivial one's `trivial`: the collapse guard's
    margin beyond it (scaled for figures beyond 1, such as a loss), in the objective's direction `sign`."""
    return trivial + sign * F1_MARGIN * max(1.0, abs(trivial))


# A model that ignores its input still scores above the majority class by luck on a few hundred rows: on 269
# validation digits (10 classes) guessing by the class frequencies reaches accuracy 0.1375 one draw in 40, where
# the majority class scores 0.100 and the collapse guard's margin ends at 0.120. At 7% of a run on 300 digits one
# network sat at 0.130 there (35 of 269), counted as learned, and halving kept it over three near-chance ones.
CHANCE_DRAWS = 400
CHANCE_QUANTILE = 0.975


def chance_figure(train_labels: Any, validation_labels: Any, num_classes: int, metric: str,
                  seed: int = 0) -> float | None:
    """What a model that ignores its input reaches in `metric` on the validation labels by luck one time in 40:
    the 97.5th percentile of guessing each row's class from the training frequencies (seeded draws), or the
    majority class's figure plus the collapse guard's margin where that is higher; None for a metric not
    scored from the predicted classes (the loss). A bar for one evaluation on a few hundred rows, where noise
    counts; `guessing_baseline` is the same guesser's expectation, the bar for a finished model's report."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    trivial = majority_figure(train_labels, validation_labels, num_classes, metric)  # None but for these four:
    if trivial is None:
        return None
    scorer = {"accuracy": lambda truth, guess: np.mean(truth == guess), "f1": f1_score, "precision": precision_score,
              "recall": recall_score}[metric]
    extra = {} if metric == "accuracy" else {"average": "macro", "labels": range(num_classes), "zero_division": 0}
    truth = np.asarray(validation_labels, dtype=int)
    counts = np.bincount(np.asarray(train_labels, dtype=int), minlength=num_classes)
    shares, rng = counts / counts.sum(), np.random.default_rng(seed)
    # One draw at a time: a large validation split (50,000 rows) would otherwise hold 400 copies of it
    figures = [float(scorer(truth, rng.choice(num_classes, size=len(truth), p=shares), **extra))
               for _ in range(CHANCE_DRAWS)]
    return max(margin_bar(trivial), float(np.quantile(figures, CHANCE_QUANTILE)))


def collapse_warning(report: dict[str, Any], split: str) -> str | None:
    """A warning when the split's predictions collapse to one class or do not beat the baseline."""
    matrix = np.asarray(report["confusion_matrix"]["matrix"], dtype=float)
    labels = report["confusion_matrix"]["labels"]
    predicted = matrix.sum(axis=0)
    if predicted.sum() == 0 or len(labels) < 2:
        return None
    top = int(np.argmax(predicted))
    top_share = predicted[top] / predicted.sum()
    baseline = report.get("majority_baseline") or {}
    f1, floor = report.get("f1"), baseline.get("f1")
    no_better = f1 is not None and floor is not None and f1 <= floor + F1_MARGIN
    guess = (report.get("guessing_baseline") or {}).get("f1")
    if top_share < ONE_CLASS_SHARE and not no_better:
        if f1 is None or guess is None or f1 > guess:
            return None
        return (f"The selected model scores macro-F1 {f1:.3f} on {split}, no better than guessing each row's class "
                f"from the training frequencies ({guess:.3f}): it has not learned the task. Try more "
                "training.num_train_epochs, a different training.learning_rate, finetune.strategy: full (where the "
                "few-label probe was chosen), or more labelled rows.")
    what = (f"predicts '{labels[top]}' for {top_share:.0%} of the {split} rows" if top_share >= ONE_CLASS_SHARE
            else f"scores macro-F1 {f1:.3f} on {split}, no better than always predicting "
                 f"'{baseline.get('class')}' ({floor:.3f})")
    return (f"The selected model {what}: it has collapsed to the majority class. Try "
            "finetune.class_weights: balanced, training.metric_for_best_model: f1, a different "
            "training.learning_rate (higher for a new head, lower if the loss diverged), more "
            "training.num_train_epochs, or finetune.strategy: probe_then_full.")


def add_baselines(results: dict[str, Any], train_counts: list[int]) -> list[str]:
    """Adds `majority_baseline` to each split's report; returns the collapse warnings."""
    warnings = []
    for split in ("validation", "test"):
        report = results.get(split)
        if report and report.get("confusion_matrix"):
            report["majority_baseline"] = majority_baseline(report, train_counts)
            report["guessing_baseline"] = guessing_baseline(report, train_counts)
            warning = collapse_warning(report, split)
            if warning:
                warnings.append(warning)
    return warnings
