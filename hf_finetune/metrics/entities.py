"""Entity-level metrics of token classification, as seqeval computes them, and their trivial baseline.

An entity counts as found when its span and type both match exactly. Precision, recall and F1 are
micro-averaged over entity types (`f1`, the selection metric) and macro-averaged beside them
(`macro_f1`); `accuracy` is the share of words tagged right. Figures come from `seqeval` in its
default mode (conlleval's reading, what transformers' run_ner.py reports).

Predictions arrive per model row: one tag id per token, -100 where no word starts (padding, special
tokens, later sub-tokens). A sentence longer than max_length spans several rows (windows); each of
its words is scored once, from the window that owns it (data/words.py), and the rows are joined back
into sentences with the split's `sentence` column, so entities are read per sentence as in the data.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hf_finetune.metrics.names import ENTITY_METRICS

IGNORED = -100
SENTENCE_COLUMN = "sentence"  # the source sentence of each model row (data/words.py)
COLLAPSE_SHARE = 0.05  # the model finds fewer than this share of the entities the data holds
F1_MARGIN = 0.02  # entity F1 within this of the all-O baseline's (0) counts as no better


def _number(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


def _rows(values: Any) -> list[np.ndarray]:
    """Per-row integer arrays (a padded 2-D array, or ragged lists of rows)."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return list(values.astype(np.int64))
    return [np.asarray(row, dtype=np.int64).reshape(-1) for row in values]


class EntityMetrics:
    """The recipe's metrics over tag predictions, plus the per-type report for final results."""

    def __init__(self, names: list[str], label_names: list[str], sentences: list[int] | None = None):
        self.names = [n for n in names if n in ENTITY_METRICS] or list(ENTITY_METRICS)
        self.label_names = list(label_names)
        self.sentences = sentences  # the source sentence of each row, when a split has windows

    def for_dataset(self, dataset: Any) -> EntityMetrics:
        """The same metrics for one prepared split, whose rows it joins back into sentences."""
        columns = getattr(dataset, "column_names", None) or []
        sentences = list(dataset[SENTENCE_COLUMN]) if SENTENCE_COLUMN in columns else None
        return EntityMetrics(self.names, self.label_names, sentences)

    def tags(self, predictions: Any, references: Any) -> tuple[list[list[str]], list[list[str]]]:
        """(true tags, predicted tags) per sentence, one per word."""
        preds, refs = _rows(predictions), _rows(references)
        groups = self.sentences if self.sentences is not None and len(self.sentences) == len(refs) else range(len(refs))
        true: list[list[str]] = []
        pred: list[list[str]] = []
        last = None
        for group, p, r in zip(groups, preds, refs, strict=True):
            keep = r != IGNORED
            words_true = [self.label_names[i] for i in r[keep]]
            words_pred = [self.label_names[i] if 0 <= i < len(self.label_names) else "O" for i in p[: len(r)][keep]]
            if group == last and true:
                true[-1] += words_true
                pred[-1] += words_pred
            else:
                true.append(words_true)
                pred.append(words_pred)
            last = group
        return true, pred

    def _figures(self, true: list[list[str]], pred: list[list[str]]) -> tuple[dict[str, float], dict[str, Any]]:
        import warnings

        from seqeval.metrics import accuracy_score, classification_report

        with warnings.catch_warnings():  # a type never predicted: its precision is 0, as zero_division says
            warnings.simplefilter("ignore")
            table = classification_report(true, pred, output_dict=True, zero_division=0)
            accuracy = accuracy_score(true, pred) if any(true) else 0.0
        micro, macro = table.pop("micro avg"), table.pop("macro avg")
        table.pop("weighted avg", None)
        figures = {"f1": micro["f1-score"], "precision": micro["precision"], "recall": micro["recall"],
                   "accuracy": accuracy, "macro_f1": macro["f1-score"], "macro_precision": macro["precision"],
                   "macro_recall": macro["recall"]}
        return {k: _number(v) for k, v in figures.items()}, table

    def compute(self, predictions: Any, references: Any) -> dict[str, float]:
        """The recipe's metrics as flat numbers (micro over entity types; macro beside it)."""
        figures, _ = self._figures(*self.tags(predictions, references))
        return {key: figures[key] for key in self.keys()}

    def keys(self) -> list[str]:
        """The figures reported, entity micro-F1 first (the selection metric), the macro averages last."""
        names = [n for n in ENTITY_METRICS if n in self.names]
        return [ENTITY_METRICS[n][0] for n in names] + [k for n in names for k in ENTITY_METRICS[n][1:]]

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        """`compute_metrics` for the Trainer."""
        return self.compute(eval_pred.predictions, eval_pred.label_ids)

    def report(self, predictions: Any, references: Any) -> dict[str, Any]:
        """Scalar metrics, precision/recall/F1/support per entity type, and what was counted."""
        from seqeval.metrics.sequence_labeling import get_entities

        true, pred = self.tags(predictions, references)
        figures, table = self._figures(true, pred)
        out: dict[str, Any] = {key: figures[key] for key in self.keys()}
        out["per_class"] = {kind: {"precision": _number(v["precision"]), "recall": _number(v["recall"]),
                                   "f1": _number(v["f1-score"]), "support": int(v["support"])}
                            for kind, v in sorted(table.items())}
        words = sum(len(s) for s in true)
        out["num_samples"] = len(true)
        out["words"] = words
        out["entities"] = {"true": len(get_entities(true)), "predicted": len(get_entities(pred))}
        out["predicted_outside"] = (sum(t == "O" for s in pred for t in s) / words) if words else 0.0
        out["true_outside"] = (sum(t == "O" for s in true for t in s) / words) if words else 0.0
        return out


def all_outside_baseline(report: dict[str, Any]) -> dict[str, Any]:
    """What tagging every word O (no entity) scores on this split: entity figures 0, accuracy the share of O."""
    return {"class": "O", "name": "all-O", "accuracy": report.get("true_outside", 0.0), "precision": 0.0,
            "recall": 0.0, "f1": 0.0}


def collapse_warning(report: dict[str, Any], split: str) -> str | None:
    """A warning when the model (almost) only predicts O: few entities found, or entity F1 no better than 0."""
    counts = report.get("entities") or {}
    true, found = counts.get("true", 0), counts.get("predicted", 0)
    if not true:
        return None
    f1 = report.get("f1")
    if found >= COLLAPSE_SHARE * true and (f1 is None or f1 > F1_MARGIN):
        return None
    return (f"The selected model predicts 'O' for {report.get('predicted_outside', 0):.1%} of the {split} words and "
            f"finds {found} entities where the data holds {true} (entity F1 {f1 or 0:.3f}, as tagging every word O "
            "would score 0): it has collapsed to 'O'. Try more training.num_train_epochs, a higher "
            "training.learning_rate for the new head (finetune.head_learning_rate), finetune.class_weights: "
            "balanced, or more labelled sentences.")


def add_entity_baselines(results: dict[str, Any]) -> list[str]:
    """Adds the all-O baseline to each split's report; returns the collapse warnings."""
    warnings = []
    for split in ("validation", "test"):
        report = results.get(split)
        if report and "entities" in report:
            report["majority_baseline"] = all_outside_baseline(report)
            warning = collapse_warning(report, split)
            if warning:
                warnings.append(warning)
    return warnings
