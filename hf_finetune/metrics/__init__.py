"""Metrics through `evaluate`: bundled modules that work offline, any other Hub metric by name."""

from __future__ import annotations

import logging
import numbers
from pathlib import Path
from typing import Any

import numpy as np

from hf_finetune import hub
from hf_finetune.errors import UserError
from hf_finetune.metrics.names import BUNDLED_METRICS

logger = logging.getLogger(__name__)

MODULES_DIR = Path(__file__).parent / "modules"
AVERAGED = ("precision", "recall", "f1")  # bundled metrics that take `average` and `labels`


def load_metric(name: str) -> Any:
    """An `evaluate` metric: bundled ones from the package, other names from the Hub.

    Raises:
        HubUnreachableError: a Hub metric was asked for and the Hub cannot be reached.
        UserError: the Hub has no metric of that name.
    """
    import evaluate

    if name in BUNDLED_METRICS:
        return evaluate.load(str(MODULES_DIR / name), keep_in_memory=True)
    if hub.unreachable_reason() is not None:
        raise hub.unreachable_error(
            "metrics", name, "metric",
            f"These metrics are bundled and work offline: {', '.join(BUNDLED_METRICS)}.",
        )
    try:
        return evaluate.load(name, keep_in_memory=True)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise UserError(f"metrics: cannot load metric '{name}': {exc}") from None


def logits_to_predictions(logits: Any, labels: Any) -> Any:
    """Keeps only class ids during evaluation, so memory grows by one integer per sample, not per logit."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=1 if logits.ndim == 4 else -1)  # (batch, classes, height, width): a class per pixel


class ClassificationMetrics:
    """The recipe's metrics over class-id predictions, plus the per-class report for final results."""

    def __init__(self, names: list[str], label_names: list[str]):
        self.names = list(names)
        self.label_names = list(label_names)
        self.modules = {name: load_metric(name) for name in self.names}
        self._confusion = load_metric_module("confusion_matrix")
        self._per_class = {name: load_metric_module(name) for name in AVERAGED}

    def for_dataset(self, dataset: Any) -> ClassificationMetrics:
        """The metrics for one prepared split: the same (each row is scored on its own)."""
        return self

    @property
    def label_ids(self) -> list[int]:
        return list(range(len(self.label_names)))

    def compute(self, predictions: Any, references: Any) -> dict[str, float]:
        """The recipe's metrics as flat numbers (macro averages for precision, recall and F1)."""
        predictions, references = _as_ids(predictions), _as_ids(references)
        out: dict[str, float] = {}
        for name, module in self.modules.items():
            kwargs = {"average": "macro", "labels": self.label_ids} if name in AVERAGED else {}
            result = module.compute(predictions=predictions, references=references, **kwargs)
            for key, value in (result or {}).items():
                if isinstance(value, numbers.Number):
                    out[key] = float(value)
                else:
                    logger.debug("metric %s: %s is not a number; kept out of the logged metrics", name, key)
        return out

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        """`compute_metrics` for the Trainer."""
        return self.compute(eval_pred.predictions, eval_pred.label_ids)

    def report(self, predictions: Any, references: Any) -> dict[str, Any]:
        """Scalar metrics, per-class precision/recall/F1 with support, and the confusion matrix."""
        predictions, references = _as_ids(predictions), _as_ids(references)
        out: dict[str, Any] = self.compute(predictions, references)
        per_metric = {
            name: module.compute(predictions=predictions, references=references, average=None,
                                 labels=self.label_ids)[name]
            for name, module in self._per_class.items()
        }
        support = np.bincount(references, minlength=len(self.label_names)).tolist()
        out["per_class"] = {
            label: {
                "precision": float(per_metric["precision"][i]),
                "recall": float(per_metric["recall"][i]),
                "f1": float(per_metric["f1"][i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(self.label_names)
        }
        matrix = self._confusion.compute(predictions=predictions, references=references, labels=self.label_ids)
        out["confusion_matrix"] = {"labels": self.label_names, "matrix": matrix["confusion_matrix"]}
        out["num_samples"] = int(len(references))
        return out


def load_metric_module(name: str) -> Any:
    import evaluate

    return evaluate.load(str(MODULES_DIR / name), keep_in_memory=True)


def _as_ids(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 2:  # logits or probabilities
        array = array.argmax(axis=-1)
    return array.astype(np.int64).reshape(-1)
