"""Metrics of semantic segmentation, from one confusion matrix of pixels, and their trivial baseline.

    mean_iou         mean over classes of intersection / union (the selection metric); a class that is
                     neither in the truth nor predicted on a split is left out of the mean (as
                     `evaluate`'s mean_iou does)
    pixel_accuracy   share of scored pixels predicted right
    mean_dice        mean over the same classes of 2 x intersection / (true + predicted pixels)
    per_class        IoU, Dice and true pixels of every class

Pixels whose label is -100 (the mask's ignore index, data/masks.py) are not scored. The baseline
predicts the largest training class for every pixel; a model whose mean IoU is within IOU_MARGIN of
it, or which predicts one class for nearly every pixel, gets a collapse warning.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IGNORED = -100
IOU_MARGIN = 0.02
ONE_CLASS_SHARE = 0.98  # predicting one class for this share of pixels (where the truth is more varied)
METRIC_KEYS = ("mean_iou", "pixel_accuracy", "mean_dice")


def confusion(predictions: Any, references: Any, num_labels: int) -> np.ndarray:
    """(true, predicted) pixel counts over every scored pixel."""
    pred = np.asarray(predictions, dtype=np.int64).reshape(-1)
    true = np.asarray(references, dtype=np.int64).reshape(-1)
    keep = (true != IGNORED) & (true >= 0) & (true < num_labels)
    pred = np.clip(pred[keep], 0, num_labels - 1)
    return np.bincount(true[keep] * num_labels + pred, minlength=num_labels ** 2).reshape(num_labels, num_labels)


def figures(matrix: np.ndarray) -> dict[str, Any]:
    """Mean IoU, pixel accuracy, mean Dice and per-class IoU / Dice from a confusion matrix."""
    hit = np.diag(matrix).astype(np.float64)
    true, pred = matrix.sum(axis=1).astype(np.float64), matrix.sum(axis=0).astype(np.float64)
    union = true + pred - hit
    present = union > 0
    iou = np.divide(hit, union, out=np.zeros_like(hit), where=present)
    dice = np.divide(2 * hit, true + pred, out=np.zeros_like(hit), where=present)
    total = matrix.sum()
    return {"mean_iou": float(iou[present].mean()) if present.any() else 0.0,
            "pixel_accuracy": float(hit.sum() / total) if total else 0.0,
            "mean_dice": float(dice[present].mean()) if present.any() else 0.0,
            "iou": iou, "dice": dice, "present": present, "true": true, "pred": pred}


class SegmentationMetrics:
    """`compute_metrics` over predicted class ids per pixel, and the per-class report for final results."""

    def __init__(self, names: list[str], label_names: list[str]):
        self.names = list(names)
        self.label_names = list(label_names)

    def for_dataset(self, dataset: Any) -> SegmentationMetrics:
        return self

    def keys(self) -> list[str]:
        return list(METRIC_KEYS)

    def compute(self, predictions: Any, references: Any) -> dict[str, float]:
        out = figures(confusion(predictions, references, len(self.label_names)))
        return {key: out[key] for key in METRIC_KEYS}

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        return self.compute(eval_pred.predictions, eval_pred.label_ids)

    def report(self, predictions: Any, references: Any) -> dict[str, Any]:
        """Scalar metrics, IoU / Dice / true and predicted pixels per class, and the pixels counted."""
        matrix = confusion(predictions, references, len(self.label_names))
        out = figures(matrix)
        report: dict[str, Any] = {key: out[key] for key in METRIC_KEYS}
        report["per_class"] = {name: {"iou": float(out["iou"][i]), "dice": float(out["dice"][i]),
                                      "support": int(out["true"][i]), "predicted": int(out["pred"][i])}
                               for i, name in enumerate(self.label_names)}
        report["num_samples"] = int(np.asarray(references).shape[0]) if np.ndim(references) else 0
        report["counted"] = {"pixels": int(matrix.sum())}
        report["confusion_matrix"] = {"labels": list(self.label_names), "matrix": matrix.tolist()}
        return report


def majority_baseline(report: dict[str, Any], counts: Any, names: list[str]) -> dict[str, Any]:
    """What predicting the largest training class for every pixel scores on this split."""
    counts = np.asarray(counts)
    top = int(counts.argmax())
    true = np.array([report["per_class"][n]["support"] for n in names], dtype=np.int64)
    k = len(names)
    matrix = np.zeros((k, k), dtype=np.int64)
    matrix[:, top] = true
    out = figures(matrix)
    return {"class": names[top], "name": names[top], **{key: out[key] for key in METRIC_KEYS}}


def collapse_warning(report: dict[str, Any], split: str) -> str | None:
    """A warning when the model does no better than the baseline, or paints (nearly) every pixel one class."""
    base = report.get("majority_baseline") or {}
    predicted = {n: c["predicted"] for n, c in report["per_class"].items()}
    true = {n: c["support"] for n, c in report["per_class"].items()}
    pixels = sum(predicted.values()) or 1
    top = max(predicted, key=predicted.get)
    truth_top = max(true.values()) / (sum(true.values()) or 1)
    one_class = predicted[top] / pixels >= ONE_CLASS_SHARE and truth_top < ONE_CLASS_SHARE
    no_better = base and report["mean_iou"] <= base.get("mean_iou", 0.0) + IOU_MARGIN
    if not (one_class or no_better):
        return None
    return (f"The selected model predicts '{top}' for {predicted[top] / pixels:.1%} of the {split} pixels; its mean "
            f"IoU {report['mean_iou']:.3f} is {'no better than' if no_better else 'close to'} painting every pixel "
            f"'{base.get('name', top)}' ({base.get('mean_iou', 0.0):.3f}): it has collapsed. Try more "
            "training.num_train_epochs, a higher finetune.head_learning_rate for the new decoder, "
            "finetune.class_weights: balanced, or more labelled images.")


def add_segmentation_baselines(results: dict[str, Any], counts: Any) -> list[str]:
    """Adds the majority-class baseline to each split's report; returns the collapse warnings."""
    warnings = []
    for split in ("validation", "test"):
        report = results.get(split)
        if report and "per_class" in report and "mean_iou" in report:
            report["majority_baseline"] = majority_baseline(report, counts, list(report["per_class"]))
            warning = collapse_warning(report, split)
            if warning:
                warnings.append(warning)
    return warnings
