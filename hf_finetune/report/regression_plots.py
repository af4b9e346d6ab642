"""Regression plots, in place of the confusion matrix: predicted against true, and residuals against predicted.

Drawn from a report's `points` (metrics/regression.py: up to 2,000 evenly spaced (true, predicted)
pairs per split, in original units), one panel per target.
"""

from __future__ import annotations

import os
from typing import Any

from hf_finetune.report.plots import _figure, _save

MAX_PANELS = 6  # targets drawn; the others are in metrics.json


def regression_plot_name(split: str) -> str:
    """The file name of a split's scatter-and-residuals plot."""
    return f"predicted_vs_true_{split}.png"


def plot_regression(report: dict[str, Any], path: str | os.PathLike, title: str) -> bool:
    """Predicted vs true (with the diagonal) and residuals vs predicted, per target.

    Returns:
        False, and writes nothing, when the report holds no points (not a regression report).
    """
    import numpy as np

    points = report.get("points")
    if not points or not points.get("true"):
        return False
    true, pred = np.asarray(points["true"], dtype=float), np.asarray(points["predicted"], dtype=float)
    names = list(points["targets"])[:MAX_PANELS]
    fig = _figure(8, 3.6 * len(names))
    axes = fig.subplots(len(names), 2, squeeze=False)
    for i, name in enumerate(names):
        t, p = true[:, i], pred[:, i]
        low, high = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        scatter, residual = axes[i]
        scatter.scatter(t, p, s=6, alpha=0.4)
        scatter.plot([low, high], [low, high], color="black", linewidth=0.8, label="predicted = true")
        scatter.set_xlabel(f"true {name}")
        scatter.set_ylabel(f"predicted {name}")
        scatter.legend(loc="upper left", fontsize="small")
        residual.scatter(p, t - p, s=6, alpha=0.4)
        residual.axhline(0.0, color="black", linewidth=0.8)
        residual.set_xlabel(f"predicted {name}")
        residual.set_ylabel("true - predicted")
    fig.suptitle(title)
    _save(fig, path)
    return True


def regression_drawings(results: dict[str, Any]) -> list[tuple[str, Any]]:
    """(file name, draw) for each evaluated split of a regression run's results (none for other reports)."""
    return [(regression_plot_name(split),
             lambda p, s=split: plot_regression(results[s], p, f"Predicted vs true, residuals ({s})"))
            for split in ("validation", "test") if (results.get(split) or {}).get("points")]
