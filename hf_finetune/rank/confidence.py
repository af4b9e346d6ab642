"""How sure a ranking is: bootstrap spreads of each score, and ties at the top.

A frozen-feature score computed once on a few hundred rows is a noisy figure: two candidates 0.006
LogME apart may swap on another draw of the same data. Every candidate is rescored on the same
bootstrap resamples (seeded, so the same rows for every candidate, which pairs the comparison):

    logme          the training rows are resampled and LogME recomputed (one SVD per resample)
    knn, probe     the validation rows are resampled and the fixed predictions rescored; the
                   classifiers are not refitted (the validation draw is the larger noise at these
                   sizes, and refitting a probe per resample would cost minutes)
    hscore         the training rows are resampled

A score's spread is the standard deviation over the resamples. The leader and a runner-up are tied
when the leader is ahead on fewer than `TIE_SHARE` of the paired resamples: the table then says
"tie" instead of naming a winner.

After fine-tuning (`rank.by: finetune`) the figures are validation metrics of runs stopped at the same
share, and they are noisy the same way: on 300 digits budget 1 named Lite1 (0.212) over MobileNetV2
(0.178), 9 of 269 images apart, at 20% of their runs. Each run's predictions on validation are rescored
on the same resamples (`finetuned_ties`), for the metrics that are functions of the predicted classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RESAMPLES = 30  # enough for a spread to one significant figure; LogME's SVD makes each a fraction of a second
TIE_SHARE = 0.95  # the leader must be ahead on this share of the paired resamples to be called the winner


@dataclass
class Draws:
    """The seeded resamples every candidate is rescored on."""

    train: list[np.ndarray]
    validation: list[np.ndarray]


def draws(n_train: int, n_validation: int, seed: int, resamples: int = RESAMPLES) -> Draws:
    """`resamples` bootstrap index sets of each split, the same for every candidate of a ranking."""
    rng = np.random.default_rng(seed)
    return Draws([rng.integers(0, n_train, n_train) for _ in range(resamples)],
                 [rng.integers(0, n_validation, n_validation) for _ in range(resamples)])


@dataclass
class Spread:
    """A score's bootstrap values and their standard deviation."""

    values: np.ndarray
    std: float = field(init=False)

    def __post_init__(self) -> None:
        self.std = float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0


def rescored_on_validation(correct: np.ndarray, truth: np.ndarray, predicted: np.ndarray, d: Draws,
                           f1: bool = False) -> Spread:
    """Accuracy (or macro-F1) of fixed validation predictions on each validation resample."""
    from sklearn.metrics import f1_score

    if f1:
        return Spread(np.array([f1_score(truth[i], predicted[i], average="macro", zero_division=0)
                                for i in d.validation]))
    return Spread(np.array([correct[i].mean() for i in d.validation]))


def rescored_on_train(score: object, features: np.ndarray, labels: np.ndarray, d: Draws) -> Spread:
    """`score(features, labels)` on each training resample (a resample with a single class scores as NaN)."""
    values = []
    for i in d.train:
        y = labels[i]
        values.append(float(score(features[i], y)) if len(np.unique(y)) > 1 else np.nan)
    return Spread(np.array(values))


def tied_with_leader(spreads: list[Spread]) -> list[tuple[int, float]]:
    """(index, share) of every candidate after the first that the first is ahead of on fewer than
    `TIE_SHARE` of the paired resamples; `spreads` are in table order, the leader first."""
    leader = spreads[0].values
    tied = []
    for index, other in enumerate(spreads[1:], start=1):
        both = ~(np.isnan(leader) | np.isnan(other.values))
        share = float(np.mean(leader[both] > other.values[both])) if both.any() else 0.0
        if share < TIE_SHARE:
            tied.append((index, share))
    return tied


# The objectives a tie after fine-tuning is called on: rescored from each row's predicted class (macro averages over
# every class, as metrics/__init__.ClassificationMetrics computes them). A loss is not a function of the classes.
RESCORABLE = ("accuracy", "f1", "precision", "recall")


def rescore(metric: str, truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """`metric` (one of RESCORABLE) of predicted classes against the truth."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    if metric == "accuracy":
        return float(np.mean(truth == predicted))
    score = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[metric]
    return float(score(truth, predicted, labels=list(range(num_classes)), average="macro", zero_division=0))


def finetuned_ties(predictions: list[tuple[np.ndarray, np.ndarray]], metric: str, num_classes: int, seed: int,
                   resamples: int = RESAMPLES) -> list[tuple[int, float]]:
    """(index, share) of every run after the first (the leader) that the leader is ahead of on fewer than
    `TIE_SHARE` of paired bootstrap resamples of the validation rows, by `metric` of their (predicted class,
    true class) arrays; [] for a metric not in RESCORABLE."""
    if metric not in RESCORABLE:
        return []
    preds = [(np.asarray(p).reshape(-1), np.asarray(t).reshape(-1)) for p, t in predictions]
    d = draws(1, len(preds[0][1]), seed, resamples)
    spreads = [Spread(np.array([rescore(metric, t[i], p[i], num_classes) for i in d.validation])) for p, t in preds]
    return tied_with_leader(spreads)
