"""Regression metrics (RMSE, MAE, R², Pearson, Spearman), the training-mean baseline and the collapse test.

Figures are in the targets' original units. During training the model predicts standardised targets
((y - mean) / std, the training split's mean and std: tasks/targets.py); the metrics map predictions
and references back with that scale before scoring, so validation figures during training and the
final ones read the same. A finished model outputs original units itself (its head carries the scale:
tasks/regression.py), and is scored with the identity scale.

Each figure is computed per target and averaged over targets (`per_target` holds each one). Pearson
and Spearman of a constant prediction are undefined; they count as 0 (no linear or rank relation).

Baseline: always predicting the training mean (0 in standardised units): its RMSE is the split's spread
around that mean, its R² is about 0 (below 0 when the split's mean differs), its correlations 0.
Collapse: predictions whose spread is a small fraction of the targets' spread (a model that learnt to
predict about the mean everywhere) get a warning, as does one no better than the baseline's RMSE.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hf_finetune.metrics.names import REGRESSION_METRICS

COLLAPSE_SPREAD = 0.1  # predictions' standard deviation below this share of the targets' counts as collapsed
RMSE_MARGIN = 0.01  # RMSE within 1% of the training-mean baseline's counts as no better
PLOT_POINTS = 2000  # (true, predicted) pairs kept per split for the scatter and residual plots


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant has no correlation (not float noise)
        return 0.0
    return _finite(np.corrcoef(a, b)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values)


def figures(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, R², Pearson and Spearman of one target's predictions."""
    err = pred - true
    total = float(((true - true.mean()) ** 2).sum())
    return {
        "pearson": _pearson(pred, true),
        "spearman": _pearson(_ranks(pred), _ranks(true)),
        "rmse": float(np.sqrt((err ** 2).mean())),
        "mae": float(np.abs(err).mean()),
        "r2": _finite(1.0 - float((err ** 2).sum()) / total) if total > 0 else 0.0,
    }


def as_matrix(values: Any, targets: int) -> np.ndarray:
    """Predictions or references as a float (rows, targets) array."""
    if isinstance(values, tuple):
        values = values[0]
    return np.asarray(values, dtype=np.float64).reshape(-1, targets)


class RegressionMetrics:
    """The recipe's regression metrics over value predictions, plus the per-target report for final results.

    Args:
        names: the recipe's metrics (REGRESSION_METRICS names; all of them when none is one).
        label_names: the target names, in output order.
        mean, std: the standardisation of the targets the predictions and references are in (per target);
            None for original units.
    """

    def __init__(self, names: list[str], label_names: list[str], mean: Any = None, std: Any = None):
        self.names = [n for n in names if n in REGRESSION_METRICS] or list(REGRESSION_METRICS)
        self.label_names = list(label_names)
        k = len(self.label_names)
        self.known_mean = mean is not None  # the training mean (for the baseline) is known to a training run
        self.mean = np.zeros(k) if mean is None else np.asarray(mean, dtype=np.float64).reshape(k)
        self.std = np.ones(k) if std is None else np.asarray(std, dtype=np.float64).reshape(k)

    def for_dataset(self, dataset: Any) -> RegressionMetrics:
        return self

    @staticmethod
    def preprocess_logits(logits: Any, labels: Any) -> Any:
        """`preprocess_logits_for_metrics`: the values themselves (no argmax)."""
        return logits[0] if isinstance(logits, tuple) else logits

    def original(self, values: Any) -> np.ndarray:
        """Values in original units (rows, targets)."""
        return as_matrix(values, len(self.label_names)) * self.std + self.mean

    def _per_target(self, pred: np.ndarray, true: np.ndarray) -> dict[str, dict[str, float]]:
        return {name: figures(pred[:, i], true[:, i]) for i, name in enumerate(self.label_names)}

    def compute(self, predictions: Any, references: Any) -> dict[str, float]:
        """The recipe's metrics, averaged over the targets, in original units."""
        per = self._per_target(self.original(predictions), self.original(references))
        return {name: float(np.mean([v[name] for v in per.values()])) for name in self.names}

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        """`compute_metrics` for the Trainer."""
        return self.compute(eval_pred.predictions, eval_pred.label_ids)

    def report(self, predictions: Any, references: Any) -> dict[str, Any]:
        """Averaged figures, per-target figures with the spreads, the training-mean baseline, plot points."""
        pred, true = self.original(predictions), self.original(references)
        per = self._per_target(pred, true)
        out: dict[str, Any] = {name: float(np.mean([v[name] for v in per.values()])) for name in self.names}
        for i, name in enumerate(self.label_names):
            per[name].update(true_std=float(true[:, i].std()), predicted_std=float(pred[:, i].std()),
                             true_mean=float(true[:, i].mean()), predicted_mean=float(pred[:, i].mean()))
        out["per_target"] = per
        if self.known_mean:  # the training mean as a constant prediction (0 in standardised units)
            base = self._per_target(np.broadcast_to(self.mean, true.shape), true)
            for name in self.label_names:
                per[name]["baseline_rmse"] = base[name]["rmse"]
            out["mean_baseline"] = {k: float(np.mean([v[k] for v in base.values()])) for k in REGRESSION_METRICS}
            out["mean_baseline"]["training_mean"] = [float(m) for m in self.mean]
        keep = np.linspace(0, len(true) - 1, min(len(true), PLOT_POINTS)).astype(int) if len(true) else []
        out["points"] = {"targets": self.label_names, "true": true[keep].tolist(), "predicted": pred[keep].tolist()}
        out["num_samples"] = int(len(true))
        return out


def collapse_warning(report: dict[str, Any], split: str) -> str | None:
    """A warning when the predictions' spread is a small fraction of the targets', or the training mean
    predicts as well."""
    per = report.get("per_target") or {}
    narrow = [(name, v) for name, v in per.items()
              if v.get("true_std", 0) > 0 and v.get("predicted_std", 0) < COLLAPSE_SPREAD * v["true_std"]]
    worse = [(name, v) for name, v in per.items() if v.get("rmse", 0) >= (1 - RMSE_MARGIN) * v.get("baseline_rmse", 0)
             and v.get("baseline_rmse", 0) > 0]
    if not narrow and not worse:
        return None
    if narrow:
        name, v = narrow[0]
        what = (f"predicts '{name}' with a spread (standard deviation) of {v['predicted_std']:.4g} where the {split} "
                f"targets spread {v['true_std']:.4g} ({v['predicted_std'] / v['true_std']:.0%}, below "
                f"{COLLAPSE_SPREAD:.0%})")
    else:
        name, v = worse[0]
        what = (f"has an RMSE of {v['rmse']:.4g} for '{name}' on {split}, no better than always predicting the "
                f"training mean ({v['baseline_rmse']:.4g})")
    return (f"The selected model {what}: it has collapsed to about the training mean. Try a different "
            "training.learning_rate (lower if the loss diverged, higher for the new head), more "
            "training.num_train_epochs, or finetune.regression_loss: huber if the targets have outliers.")


def add_regression_baselines(results: dict[str, Any]) -> list[str]:
    """Adds the training-mean baseline to each split's report (as the card reads baselines); returns the
    collapse warnings."""
    warnings = []
    for split in ("validation", "test"):
        report = results.get(split)
        if report and "mean_baseline" in report:
            base = report.pop("mean_baseline")
            report["majority_baseline"] = {"class": "the training mean", "name": "training-mean", **base}
            warning = collapse_warning(report, split)
            if warning:
                warnings.append(warning)
    return warnings
