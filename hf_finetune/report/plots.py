"""The run's plots: loss, validation metrics, confusion matrices (matplotlib's object API, Agg canvas)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

from hf_finetune.files import write_atomically

LOSS_PLOT = "training_loss.png"
METRICS_PLOT = "validation_metrics.png"
DPI = 120
METRIC_NAMES = {"accuracy": "Accuracy", "precision": "Precision (macro)", "recall": "Recall (macro)",
                "f1": "F1 (macro)", "matthews_correlation": "Matthews correlation"}


def confusion_plot_name(split: str) -> str:
    """The file name of a split's confusion-matrix plot."""
    return f"confusion_matrix_{split}.png"


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    # A bare Figure draws on the Agg canvas when saved: no pyplot, no global backend, no display needed.
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Any, path: str | os.PathLike) -> None:
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def plot_loss(log_history: list[dict[str, Any]], path: str | os.PathLike) -> bool:
    """Training loss (every logged step) and validation loss (every evaluation) over optimizer steps.

    Returns:
        False, and writes nothing, when the log holds no loss.
    """
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    val = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    if not train and not val:
        return False
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    for points, label, style in ((train, "training", "-"), (val, "validation", "--")):
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, style, marker="o" if len(points) <= 30 else None, markersize=4, label=label)
    ax.set_title("Training and validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (cross-entropy)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    return True


def plot_validation_metrics(log_history: list[dict[str, Any]], names: Iterable[str], selected: str | None,
                            path: str | os.PathLike, titles: dict[str, str] | None = None) -> bool:
    """The validation metrics at every evaluation, over epochs; the model-selection metric stands out
    (`titles`: the task's names for its metrics, default METRIC_NAMES).

    Returns:
        False, and writes nothing, when the run never evaluated.
    """
    from matplotlib.ticker import MaxNLocator

    evals = [e for e in log_history if "epoch" in e and any(f"eval_{n}" in e for n in names)]
    if not evals:
        return False
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    values: list[float] = []
    for name in names:
        points = [(e["epoch"], e[f"eval_{name}"]) for e in evals if f"eval_{name}" in e]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        values += ys
        chosen = name == selected
        ax.plot(xs, ys, marker="o", markersize=5 if chosen else 3, linewidth=2.5 if chosen else 1.2,
                label=(titles or METRIC_NAMES).get(name, name) + (" (selects the model)" if chosen else ""),
                zorder=3 if chosen else 2)
    if all(-1.0 <= v <= 1.0 for v in values):  # scores: keep the scale honest, from 0 (or -1) to 1
        ax.set_ylim(min(0.0, min(values)) - 0.02, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Validation metrics by epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    _save(fig, path)
    return True


def shorten(label: str, limit: int = 28) -> str:
    """Long class names lose their middle, not their end, so similar names stay distinguishable."""
    if len(label) <= limit:
        return label
    keep = limit - 1
    return label[: keep - keep // 2] + "…" + label[-(keep // 2):]


def confusion_matrix_figure(matrix: list[list[int]], labels: list[str], title: str) -> Any:
    """The confusion matrix as a matplotlib Figure: true labels down, predicted across.

    Cells show counts; colour is the share of the true class (its recall on the diagonal), so a
    rare class is as visible as a common one. Tick labels stay apart up to many classes: the figure
    grows with the number of classes, x labels turn vertical when they would not fit side by side,
    and beyond 60 classes only every k-th label is named.
    """
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64)
    n = len(labels)
    names = [shorten(str(label)) for label in labels]
    side = min(max(3.0 + 0.42 * n, 4.5), 22.0)  # inches
    fig = _figure(side + 2.0, side + 0.8)
    ax = fig.add_subplot()
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    # aspect="auto": the layout engine then fits labels, colour bar and cells into the figure exactly
    # (a fixed aspect can push the y label off the edge); the figure is near square, and so are the cells.
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label("share of the true class")
    fontsize = max(5.0, min(10.0, 260.0 / max(n, 1)))
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=fontsize,
                        color="white" if shares[i, j] > 0.55 else "black")
    step = max(1, math.ceil(n / 60))
    ticks = list(range(0, n, step))
    vertical = sum(len(names[i]) for i in ticks) * fontsize * 0.62 > side * 72 * 0.75
    ax.set_xticks(ticks, [names[i] for i in ticks], fontsize=fontsize, rotation=90 if vertical else 0)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=fontsize)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(f"{title}, {int(counts.sum())} samples")
    return fig


def plot_confusion_matrix(report: dict[str, Any], path: str | os.PathLike, title: str) -> bool:
    """Draws a report's confusion matrix (`metrics.json` format) to a PNG."""
    cm = report.get("confusion_matrix")
    if not cm:
        return False
    _save(confusion_matrix_figure(cm["matrix"], cm["labels"], title), path)
    return True
