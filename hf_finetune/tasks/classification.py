"""Single-label classification: one class per input, softmax over a new linear head, cross-entropy.

What the problem brings to its tasks (text-classification, image-classification): the label space
is the classes of the label column (data/labels.py), the metrics are accuracy and macro precision,
recall and F1 with per-class figures and the confusion matrix (metrics/), the trivial baseline is
the majority class (metrics/baseline.py), and predict returns the top-k classes with their scores.
"""

from __future__ import annotations

from typing import Any

from hf_finetune.tasks.base import Task


def build_classifier(task: Task, recipe: Any, labels: Any, tokenizer: Any = None) -> Any:
    """The recipe's backbone with a new head of `labels.num_labels` outputs."""
    return task.inputs.build_backbone(recipe.model, labels, tokenizer)


def classification_metrics(names: list[str], labels: list[str]) -> Any:
    """The report for one evaluated split (metrics/ClassificationMetrics)."""
    from hf_finetune.metrics import ClassificationMetrics

    return ClassificationMetrics(names, labels)
