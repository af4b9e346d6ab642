"""Single-label classification: one class per input, softmax over a new linear head, cross-entropy.

What the problem brings to its tasks (text-classification, image-classification): the label space
is the classes of the label column (data/labels.py), the metrics are accuracy and macro precision,
recall and F1 with per-class figures and the confusion matrix (metrics/), the trivial baseline is
the majority class (metrics/baseline.py), and predict returns the top-k classes with their scores.
"""

from __future__ import annotations

from typing import Any

from hf_finetune.data.labels import ClassLabeling
from hf_finetune.tasks.base import CardWords, Task, TaskProblem


def build_classifier(task: Task, recipe: Any, labels: Any, tokenizer: Any = None) -> Any:
    """The recipe's backbone with a new head of `labels.num_labels` outputs."""
    return task.inputs.build_backbone(recipe.model, labels, tokenizer)


def classification_metrics(names: list[str], labels: list[str]) -> Any:
    """The report for one evaluated split (metrics/ClassificationMetrics)."""
    from hf_finetune.metrics import ClassificationMetrics

    return ClassificationMetrics(names, labels)


class SingleLabel(TaskProblem):
    kind = "classes"
    problem_type = "single_label_classification"
    labeling = ClassLabeling()
    defaults = frozenset({"select_f1", "class_weights", "last_epoch_on_few_validation"})
    card = CardWords(
        labels="It sorts {kind}s into {n} classes: {labels}.",
        head="a new {n}-way classification head (randomly initialised)",
        per_class="Per class",
        per_class_column="class",
        baseline="always predicting the largest training class ('{name}')",
        usage='from transformers import pipeline\nclassifier = pipeline("{task}", model="{model}")\n'
              "print(classifier({example}, top_k=3))",
        metric_titles={"accuracy": "Accuracy", "precision": "Precision (macro)", "recall": "Recall (macro)",
                       "f1": "F1 (macro)", "matthews_correlation": "Matthews correlation"},
        averages={"precision": "macro", "recall": "macro", "f1": "macro"},
    )

    def metrics(self, names: list[str], labels: list[str]) -> Any:
        return classification_metrics(names, labels)

    def baselines(self, results: dict[str, Any], counts: Any) -> list[str]:
        from hf_finetune.metrics.baseline import add_baselines

        return add_baselines(results, list(counts.tolist()))


CLASSIFICATION = SingleLabel()
