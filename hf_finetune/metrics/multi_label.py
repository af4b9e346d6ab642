"""Multi-label metrics: sigmoid scores, decision thresholds tuned on validation, the trivial baselines.

Every figure is computed here with numpy (no Hub metric), on 0/1 decisions at the thresholds:

    f1, precision, recall      macro averages over labels (f1 selects the model)
    micro_f1, micro_*          over every (row, label) decision
    samples_f1                 F1 of each row's label set, averaged (a row with no true and no predicted label
                               counts 1: "no label" predicted right)
    accuracy                   subset accuracy: the whole label set right
    hamming_loss               share of (row, label) decisions wrong
    average_precision          macro average precision of the scores (no threshold)
    f1_untuned                 macro-F1 at the plain 0.5 threshold, for comparison with untuned scripts

Thresholds: per label, the one of a grid that maximises the label's F1 on validation; a label with fewer
than MIN_POSITIVES_TO_TUNE validation positives takes the global threshold (the one value that maximises
macro-F1), since a threshold fitted to two or three rows is noise. They are stored with the model
(config.json `multi_label_thresholds`) and used by predict and evaluate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

GRID = np.round(np.arange(0.02, 0.99, 0.01), 2)  # candidate thresholds on the sigmoid scores
MIN_POSITIVES_TO_TUNE = 5  # validation positives a label needs for a threshold of its own
DEFAULT_THRESHOLD = 0.5  # before any tuning (and what untuned scripts use)
ONE_SET_SHARE = 0.95  # the model predicts one label set for at least this share of the rows: collapsed
F1_MARGIN = 0.02  # macro-F1 within this of the trivial model's counts as no better
# BCE pos_weight for rare labels (finetune.class_weights: balanced): sqrt(negatives / positives), at most
# POS_WEIGHT_CAP. The full ratio makes positives and negatives weigh the same, which moves a rare label's
# scores towards a 50% prior and floods it with false positives at 1:100 and beyond; the square root gives
# rare labels gradient without that, and the tuned thresholds settle the rest.
POS_WEIGHT_CAP = 10.0


def sigmoid(logits: Any) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def pos_weights(positives: Any, rows: int) -> list[float]:
    """pos_weight per label: sqrt(negatives / positives), between 1 and POS_WEIGHT_CAP."""
    out = []
    for p in np.asarray(positives, dtype=np.float64):
        ratio = (rows - p) / p if p > 0 else 1.0
        out.append(float(min(POS_WEIGHT_CAP, max(1.0, np.sqrt(ratio)))))
    return out


def _counts(decisions: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives, false negatives per label (the last axis)."""
    tp = (decisions & truth).sum(axis=-2)
    fp = (decisions & ~truth).sum(axis=-2)
    fn = (~decisions & truth).sum(axis=-2)
    return tp, fp, fn


def _f1(tp: Any, fp: Any, fn: Any) -> np.ndarray:
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def _ratio(a: Any, b: Any) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(b), where=b > 0)


def _middle_best(scores: np.ndarray) -> int:
    """The middle of the thresholds that tie for the best score (steadier than the first of them)."""
    best = np.flatnonzero(np.isclose(scores, scores.max()))
    return int(best[len(best) // 2])


def tune_thresholds(probs: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """(global threshold, per-label thresholds) maximising macro-F1 and each label's F1 on this data."""
    truth = truth.astype(bool)
    per_threshold_f1 = np.stack([_f1(*_counts(probs >= t, truth)) for t in GRID])  # (grid, labels)
    global_t = float(GRID[_middle_best(per_threshold_f1.mean(axis=1))])
    positives = truth.sum(axis=0)
    per_label = np.array([float(GRID[_middle_best(per_threshold_f1[:, j])]) if positives[j] >= MIN_POSITIVES_TO_TUNE
                          else global_t for j in range(truth.shape[1])])
    return global_t, per_label


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Average precision of one label's scores (None when the data holds no positive)."""
    positives = int(truth.sum())
    if positives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    hits = truth[order].astype(np.float64)
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at * hits).sum() / positives)


def scores(probs: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """Every figure of the module docstring at the given per-label thresholds."""
    truth = truth.astype(bool)
    decisions = probs >= thresholds[None, :]
    tp, fp, fn = _counts(decisions, truth)
    f1 = _f1(tp, fp, fn)
    row_tp = (decisions & truth).sum(axis=1)
    row_denom = decisions.sum(axis=1) + truth.sum(axis=1)
    samples = np.where(row_denom > 0, np.divide(2 * row_tp, row_denom, out=np.zeros(len(truth)),
                                                 where=row_denom > 0), 1.0)
    ap = [average_precision(probs[:, j], truth[:, j]) for j in range(truth.shape[1])]
    ap = [v for v in ap if v is not None]
    untuned = _f1(*_counts(probs >= DEFAULT_THRESHOLD, truth))
    return {
        "f1": float(f1.mean()),
        "precision": float(_ratio(tp, tp + fp).mean()),
        "recall": float(_ratio(tp, tp + fn).mean()),
        "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "micro_precision": float(_ratio(tp.sum(), tp.sum() + fp.sum())),
        "micro_recall": float(_ratio(tp.sum(), tp.sum() + fn.sum())),
        "samples_f1": float(samples.mean()) if len(samples) else 0.0,
        "accuracy": float((decisions == truth).all(axis=1).mean()) if len(truth) else 0.0,
        "hamming_loss": float((decisions != truth).mean()) if truth.size else 0.0,
        "average_precision": float(np.mean(ap)) if ap else 0.0,
        "f1_untuned": float(untuned.mean()),
    }


def logits_to_probabilities(logits: Any, labels: Any) -> Any:
    """`preprocess_logits_for_metrics`: sigmoid scores (a float per label) instead of class ids."""
    import torch

    if isinstance(logits, tuple):
        logits = logits[0]
    return torch.sigmoid(logits.float())


class MultiLabelMetrics:
    """Multi-label figures over sigmoid scores; the thresholds tuned on the first split reported (validation)."""

    def __init__(self, names: list[str], label_names: list[str], thresholds: dict[str, Any] | None = None):
        self.names = list(names)
        self.label_names = list(label_names)
        self.thresholds = thresholds  # {"global": t, "per_label": {label: t}}: set by the first report
        self.preprocess_logits = logits_to_probabilities

    def for_dataset(self, dataset: Any) -> MultiLabelMetrics:
        return self

    def _probs(self, predictions: Any) -> np.ndarray:
        array = np.asarray(predictions, dtype=np.float64).reshape(-1, len(self.label_names))
        return array if array.size == 0 or (array.min() >= 0 and array.max() <= 1) else sigmoid(array)

    def _truth(self, references: Any) -> np.ndarray:
        return np.asarray(references, dtype=np.float64).reshape(-1, len(self.label_names)) > 0.5

    def compute(self, predictions: Any, references: Any) -> dict[str, float]:
        """The figures at thresholds tuned on this very split (model selection during training)."""
        probs, truth = self._probs(predictions), self._truth(references)
        _, per_label = tune_thresholds(probs, truth)
        return scores(probs, truth, per_label)

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        return self.compute(eval_pred.predictions, eval_pred.label_ids)

    def threshold_array(self) -> np.ndarray:
        per_label = self.thresholds["per_label"]
        return np.array([float(per_label[name]) for name in self.label_names])

    def report(self, predictions: Any, references: Any) -> dict[str, Any]:
        """Scalar figures, per-label precision/recall/F1/average precision/threshold/support, the thresholds,
        and the label set predicted most often (the collapse test)."""
        probs, truth = self._probs(predictions), self._truth(references)
        tuned_here = self.thresholds is None
        if tuned_here:
            global_t, per_label = tune_thresholds(probs, truth)
            self.thresholds = {"global": global_t, "per_label": dict(zip(self.label_names, per_label.tolist(),
                                                                         strict=True)),
                               "min_positives_to_tune": MIN_POSITIVES_TO_TUNE}
        thresholds = self.threshold_array()
        out: dict[str, Any] = scores(probs, truth, thresholds)
        decisions = probs >= thresholds[None, :]
        tp, fp, fn = _counts(decisions, truth)
        precision, recall, f1 = _ratio(tp, tp + fp), _ratio(tp, tp + fn), _f1(tp, fp, fn)
        out["per_class"] = {
            name: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
                   "average_precision": average_precision(probs[:, j], truth[:, j]),
                   "threshold": float(thresholds[j]), "support": int(truth[:, j].sum())}
            for j, name in enumerate(self.label_names)
        }
        out["thresholds"] = {**self.thresholds, "tuned_on_this_split": tuned_here}
        out["label_sets"] = label_set_summary(decisions, truth, self.label_names)
        out["num_samples"] = int(len(truth))
        return out


def label_set_summary(decisions: np.ndarray, truth: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The label set predicted most often and its share; the share of rows whose true set is empty."""
    if len(decisions) == 0:
        return {"top_predicted": [], "top_share": 0.0, "true_empty_share": 0.0, "predicted_empty_share": 0.0}
    keys, counts = np.unique(decisions, axis=0, return_counts=True)
    top = keys[int(np.argmax(counts))]
    return {"top_predicted": [n for n, on in zip(names, top, strict=True) if on],
            "top_share": float(counts.max() / len(decisions)),
            "true_empty_share": float((~truth.any(axis=1)).mean()),
            "predicted_empty_share": float((~decisions.any(axis=1)).mean())}


def frequency_baseline(report: dict[str, Any], train_positives: Any, train_rows: int) -> dict[str, Any]:
    """What predicting each label at random at its training frequency scores on this split, in expectation
    (a label of training share p on a split where its share is q: precision q, recall p, F1 2pq/(p+q))."""
    names = list(report["per_class"])
    n = max(1, int(report["num_samples"]))
    p = np.asarray(train_positives, dtype=np.float64) / max(1, train_rows)
    q = np.array([report["per_class"][name]["support"] for name in names], dtype=np.float64) / n
    f1 = _ratio(2 * p * q, p + q)
    return {"class": "each label at random at its training frequency", "f1": float(f1.mean()),
            "precision": float(q.mean()), "recall": float(p.mean()),
            "micro_f1": float(_ratio(2 * (p * q).sum(), p.sum() + q.sum())),
            "hamming_loss": float((p * (1 - q) + q * (1 - p)).mean())}


def no_label_baseline(report: dict[str, Any]) -> dict[str, Any]:
    """Predicting no label for every row."""
    n = max(1, int(report["num_samples"]))
    q = np.array([v["support"] for v in report["per_class"].values()], dtype=np.float64) / n
    return {"f1": 0.0, "micro_f1": 0.0, "accuracy": float(report["label_sets"]["true_empty_share"]),
            "hamming_loss": float(q.mean())}


def collapse_warning(report: dict[str, Any], split: str) -> str | None:
    """A warning when the model predicts one label set for (almost) every row, or is no better than chance."""
    sets = report.get("label_sets") or {}
    share = sets.get("top_share", 0.0)
    baseline = report.get("majority_baseline") or {}
    f1, floor = report.get("f1"), baseline.get("f1")
    no_better = f1 is not None and floor is not None and f1 <= floor + F1_MARGIN
    if share < ONE_SET_SHARE and not no_better:
        return None
    shown = "{" + ", ".join(sets.get("top_predicted") or []) + "}" if sets.get("top_predicted") else "no label"
    what = (f"predicts the same label set ({shown}) for {share:.0%} of the {split} rows" if share >= ONE_SET_SHARE
            else f"scores macro-F1 {f1:.3f} on {split}, no better than predicting each label at its training "
                 f"frequency ({floor:.3f})")
    return (f"The selected model {what}: it has collapsed. Try finetune.class_weights: balanced (BCE pos_weight "
            "for rare labels), a different training.learning_rate, more training.num_train_epochs, or more data "
            "for the rare labels.")


def add_multi_label_baselines(results: dict[str, Any], counts: Any) -> list[str]:
    """Adds `majority_baseline` (each label at its training frequency) and `no_label_baseline` to each split's
    report; returns the collapse warnings."""
    warnings = []
    rows = int(getattr(counts, "rows", 0)) or int(np.max(counts))
    for split in ("validation", "test"):
        report = results.get(split)
        if report and report.get("per_class") is not None and "label_sets" in report:
            report["majority_baseline"] = frequency_baseline(report, counts, rows)
            report["no_label_baseline"] = no_label_baseline(report)
            warning = collapse_warning(report, split)
            if warning:
                warnings.append(warning)
    return warnings
