"""Which pseudo-labels to keep: the confident ones, each class within its cap and its share.

Pure functions on arrays, so each rule is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hf_finetune.errors import DataError

CURVE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # recorded each round: kept count and accuracy
CURVE_TOP_SHARES = (0.1, 0.2, 0.3, 0.5, 1.0)  # the relative rule's curve: each class's most confident share


@dataclass
class Selection:
    """The pseudo-labels of one round."""

    indices: np.ndarray  # pool rows kept, ascending
    labels: np.ndarray  # their pseudo-labels (class ids), aligned with indices
    confident_per_class: np.ndarray  # rows over their class's threshold (or in its top share), before the caps
    kept_per_class: np.ndarray  # rows kept, after the caps

    @property
    def kept(self) -> int:
        return int(len(self.indices))


def class_thresholds(names: list[str], threshold: float, per_class: dict[str, float] | None) -> np.ndarray:
    """One threshold per class id: `per_class[name]` where given, else `threshold`.

    Raises:
        DataError: a class named in `per_class` is not a label of the data.
    """
    per_class = per_class or {}
    unknown = sorted(set(per_class) - set(names))
    if unknown:
        raise DataError(f"self_training.class_thresholds: '{unknown[0]}' is not a label; labels: {', '.join(names)}")
    return np.array([float(per_class.get(name, threshold)) for name in names])


def share_cap(counts: np.ndarray, share: float) -> int:
    """The largest per-class count K such that K <= share x sum(min(count, K)).

    Capping every class at K then leaves no class with more than `share` of the kept rows. The
    condition holds on an interval [0, K*] (share x sum(min(count, K)) - K is concave and 0 at 0),
    so a binary search finds K*.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if share >= 1 or counts.sum() == 0:
        return int(counts.max(initial=0))
    low, high = 0, int(counts.max())
    while low < high:
        mid = (low + high + 1) // 2
        if mid <= share * np.minimum(counts, mid).sum():
            low = mid
        else:
            high = mid - 1
    return low


def top_share_mask(probs: np.ndarray, share: float) -> np.ndarray:
    """Rows among the most confident `share` of the rows predicted as their class (at least one per
    predicted class; ties: the earlier row). Relative to the teacher's own confidence, so a modestly
    confident teacher still keeps its surest rows, and no class is kept out by a scale it never reaches."""
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), predicted]
    keep = np.zeros(len(probs), dtype=bool)
    for c in range(probs.shape[1]):
        rows = np.flatnonzero(predicted == c)
        if len(rows):
            order = np.argsort(-confidence[rows], kind="stable")
            keep[rows[order[:max(1, int(round(share * len(rows))))]]] = True
    return keep


def select_pseudo_labels(probs: np.ndarray, thresholds: np.ndarray, max_class_share: float | None,
                         top_share: float | None = None, class_caps: np.ndarray | None = None) -> Selection:
    """Keeps each pool row whose top probability reaches its predicted class's threshold (or, with
    `top_share`, that is among its predicted class's most confident `top_share`), then caps classes.

    A class over a cap keeps its most confident rows (ties: the earlier row): first its own cap
    (`class_caps`), then the share cap (`max_class_share`) on what is left.

    Args:
        probs: (rows, classes) class probabilities.
        thresholds: (classes,) threshold of each predicted class.
        max_class_share: the largest share of the kept rows one class may take, or None.
        top_share: the share of each predicted class's rows kept whatever their probability, or None.
        class_caps: (classes,) the most rows each class may keep, or None.
    """
    num_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), predicted]
    confident = confidence >= thresholds[predicted]
    if top_share is not None:
        confident |= top_share_mask(probs, top_share)
    confident_counts = np.bincount(predicted[confident], minlength=num_classes)

    def most_confident(rows: np.ndarray, cap: int) -> np.ndarray:
        if len(rows) <= cap:
            return rows
        order = np.argsort(-confidence[rows], kind="stable")  # most confident first, earlier row on ties
        return np.sort(rows[order[:cap]])

    per_class = [np.flatnonzero(confident & (predicted == c)) for c in range(num_classes)]
    if class_caps is not None:
        per_class = [most_confident(rows, int(cap)) for rows, cap in zip(per_class, class_caps, strict=True)]
    if max_class_share is not None:
        cap = share_cap(np.array([len(rows) for rows in per_class]), max_class_share)
        per_class = [most_confident(rows, cap) for rows in per_class]
    indices = np.sort(np.concatenate(per_class)) if per_class else np.zeros(0, dtype=np.int64)
    labels = predicted[indices]
    return Selection(indices, labels, confident_counts, np.bincount(labels, minlength=num_classes))


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> tuple[float | None, int]:
    """Share of rows whose prediction is their true label, over the rows with a known label (truth >= 0)."""
    known = truth >= 0
    n = int(known.sum())
    return (float((predicted[known] == truth[known]).mean()) if n else None), n


def threshold_curve(probs: np.ndarray, truth: np.ndarray | None) -> list[dict[str, float | int | None]]:
    """For each of CURVE_THRESHOLDS: how many rows a global threshold keeps, and their accuracy."""
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    out = []
    for t in CURVE_THRESHOLDS:
        keep = confidence >= t
        point: dict[str, float | int | None] = {"threshold": t, "kept": int(keep.sum())}
        if truth is not None:
            point["accuracy"] = accuracy(predicted[keep], truth[keep])[0]
        out.append(point)
    return out


def top_share_curve(probs: np.ndarray, truth: np.ndarray | None) -> list[dict[str, float | int | None]]:
    """For each of CURVE_TOP_SHARES: how many rows the relative rule keeps, and their accuracy."""
    predicted = probs.argmax(axis=1)
    out = []
    for share in CURVE_TOP_SHARES:
        keep = top_share_mask(probs, share)
        point: dict[str, float | int | None] = {"top_share": share, "kept": int(keep.sum())}
        if truth is not None:
            point["accuracy"] = accuracy(predicted[keep], truth[keep])[0]
        out.append(point)
    return out
