"""Multi-label classification: a set of labels per input (none, one or several), for texts and images.

    inputs      text-multi-label: texts or text pairs on a BERT-family encoder (tasks/text.py);
                image-multi-label: images (files, a csv/json of paths) on a timm backbone (tasks/image.py)
    labels      a list of names per row, a delimited string (data.label_separator) or one 0/1 column per
                label (data.columns.labels): read into a 0/1 row per label (tasks/label_sets.py)
    model       the backbone's own classification head with config.problem_type multi_label_classification:
                one sigmoid score per label; the loss is binary cross-entropy with logits, with a pos_weight
                per label for rare labels (finetune.class_weights: balanced, decided from the data)
    metrics     macro/micro/samples F1, per-label precision/recall/F1/average precision, subset accuracy,
                Hamming loss; thresholds per label tuned on validation (metrics/multi_label.py), stored in
                config.json; selection on macro-F1; baselines: each label at its training frequency, no label
    predict     every label's score and the labels over their thresholds; pipeline(..., top_k=None) on the
                folder returns every label's sigmoid score (config.problem_type makes sigmoid its default)
"""

from __future__ import annotations

import math
from typing import Any

from hf_finetune.tasks.base import CardWords, Task, TaskProblem
from hf_finetune.tasks.image import ImageInputs
from hf_finetune.tasks.label_sets import PROBLEM_TYPE, LabelSetLabeling
from hf_finetune.tasks.text import TextInputs

THRESHOLDS_KEY = "multi_label_thresholds"  # config.json: per-label decision thresholds, in id order
GLOBAL_THRESHOLD_KEY = "multi_label_threshold"  # config.json: the one global threshold tuned beside them
# Rarest label's negatives per positive from which BCE's pos_weight is the default: at this ratio the square
# root pos_weight (metrics/multi_label.pos_weights) is 3, the imbalance from which single-label
# classification weights its classes (training/data_aware.CLASS_WEIGHTS_FROM).
POS_WEIGHT_FROM = 9.0


class MultiLabelLoss:
    """Binary cross-entropy with logits: one term per (row, label), unreduced.

    `pos_weight` (per label) multiplies the positive terms; label smoothing moves the 0/1 targets by
    epsilon/2 towards 1/2. The Trainer counts a label row's every element as an item (`num_items_in_batch`
    is rows x labels), so the terms are summed and divided by that count, or averaged where it is not
    given: either way the mean over every (row, label), as transformers' own multi-label head computes it.
    """

    def __init__(self, label_smoothing: float = 0.0, pos_weight: Any = None):
        self.label_smoothing = label_smoothing
        self.pos_weight = pos_weight

    def __call__(self, logits: Any, targets: Any) -> Any:
        import torch.nn.functional as F

        targets = targets.float()
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / 2
        weight = self.pos_weight.to(logits.device) if self.pos_weight is not None else None
        terms = F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=weight, reduction="none")
        return terms


class MultiLabel(TaskProblem):
    kind = "label_sets"
    problem_type = PROBLEM_TYPE
    labeling = LabelSetLabeling()
    defaults = frozenset({"pos_weight"})
    card = CardWords(
        labels="It gives each {kind} any number of {n} labels (a sigmoid score per label, thresholds tuned on "
               "validation): {labels}.",
        head="a new {n}-output multi-label head (randomly initialised; sigmoid per label, binary cross-entropy)",
        per_class="Per label",
        per_class_column="label",
        baseline="predicting {name}",
        usage='from transformers import pipeline\nclassifier = pipeline("{task}", model="{model}")\n'
              "# every label's sigmoid score; the labels over their tuned thresholds (config.json "
              "multi_label_thresholds) are the prediction\nprint(classifier({example}, top_k=None))",
        metric_titles={"f1": "F1 (macro)", "micro_f1": "F1 (micro)", "samples_f1": "F1 (samples)",
                       "precision": "Precision (macro)", "recall": "Recall (macro)",
                       "micro_precision": "Precision (micro)", "micro_recall": "Recall (micro)",
                       "accuracy": "Subset accuracy", "hamming_loss": "Hamming loss",
                       "average_precision": "Average precision (macro)", "f1_untuned": "F1 (macro) at 0.5"},
        averages={"f1": "macro", "precision": "macro", "recall": "macro", "micro_f1": "micro",
                  "micro_precision": "micro", "micro_recall": "micro", "samples_f1": "samples",
                  "average_precision": "macro", "f1_untuned": "macro"},
    )

    def metrics(self, names: list[str], labels: list[str]) -> Any:
        from hf_finetune.metrics.multi_label import MultiLabelMetrics

        return MultiLabelMetrics(names, labels)

    def finished_metrics(self, names: list[str], labels: list[str], config: Any) -> Any:
        """The metrics of a finished model: its stored thresholds, never tuned again on the data scored."""
        from hf_finetune.metrics.multi_label import MultiLabelMetrics

        return MultiLabelMetrics(names, labels, stored_thresholds(config, labels))

    def baselines(self, results: dict[str, Any], counts: Any) -> list[str]:
        from hf_finetune.metrics.multi_label import add_multi_label_baselines

        return add_multi_label_baselines(results, counts)

    def loss(self, finetune: Any, label_smoothing: float, class_weights: Any) -> Any:
        """BCE with logits; the class weights are pos_weight per label."""
        return MultiLabelLoss(label_smoothing, class_weights)

    def activation(self, logits: Any) -> Any:
        """Scores of logits: a sigmoid per label."""
        import torch

        return torch.sigmoid(logits.float())

    def data_defaults(self, counts: Any, rows: int, names: list[str]) -> list[tuple[str, Any, str]]:
        """pos_weight for rare labels (recipe key finetune.class_weights: balanced)."""
        positives = [int(c) for c in counts]
        ratios = [(rows - p) / p if p else math.inf for p in positives]
        rarest = max(range(len(ratios)), key=ratios.__getitem__)
        if ratios[rarest] < POS_WEIGHT_FROM:
            return []
        return [("finetune.class_weights", "balanced",
                 f"the rarest label '{names[rarest]}' is on {positives[rarest]} of {rows} training rows "
                 f"({ratios[rarest]:.0f} negatives per positive): BCE pos_weight sqrt(negatives/positives) per label "
                 "(at most 10) gives rare labels gradient")]

    def settle(self, model: Any, labels: Any, results: dict[str, Any]) -> None:
        """Stores the thresholds tuned on validation in the model's config (config.json)."""
        thresholds = (results.get("validation") or {}).get("thresholds")
        if not thresholds:
            return
        config = model.config
        names = [config.id2label[i] for i in range(len(config.id2label))]
        setattr(config, THRESHOLDS_KEY, [float(thresholds["per_label"][n]) for n in names])
        setattr(config, GLOBAL_THRESHOLD_KEY, float(thresholds["global"]))


def stored_thresholds(config: Any, labels: list[str]) -> dict[str, Any]:
    """The thresholds a finished model's config holds (0.5 for a folder saved without them)."""
    from hf_finetune.metrics.multi_label import DEFAULT_THRESHOLD

    per_label = getattr(config, THRESHOLDS_KEY, None) or [DEFAULT_THRESHOLD] * len(labels)
    return {"global": float(getattr(config, GLOBAL_THRESHOLD_KEY, None) or DEFAULT_THRESHOLD),
            "per_label": dict(zip(labels, map(float, per_label), strict=True))}


class LabelSetTextInputs(TextInputs):
    # no probe default: the probe decision counts rows per class, which label sets do not have
    defaults = frozenset({"max_length"})

    def recognises(self, config: dict[str, Any]) -> bool:
        return super().recognises(config) and config.get("problem_type") == PROBLEM_TYPE


class LabelSetImageInputs(ImageInputs):
    # no mirror check: it compares flipped and plain images by a nearest-class probe (one class per image);
    # augmentation.hflip keeps its plain default
    defaults = frozenset()

    def recognises(self, config: dict[str, Any]) -> bool:
        return super().recognises(config) and config.get("problem_type") == PROBLEM_TYPE


# Served and tested (tests/test_multi_label.py): full fine-tuning, LoRA, the strategies (probes on cached
# features included), tune (on macro-F1 by default) and ONNX export.
# Refused by `check` and the commands naming the task, until each is built for label sets:
#   rank            LogME one-vs-rest is not built (rank/scores.py scores one class per row)
#   ensemble, soup  averaging sigmoid scores needs the members' thresholds tuned again on the average; the
#                   ensemble predictor and its evaluation average softmax rows (predictor.py, finished/evaluate.py)
#   distill         the teacher's targets are softmax distributions (training/distill.py); sigmoid targets not built
#   self_training   pseudo-labels are one class per row over a confidence (selftrain/); per-label confidence not built
CAPABILITIES = frozenset({"export", "lora", "gradual_unfreeze", "layer_decay", "tune", "linear_probe",
                          "probe_then_full", "cache_features"})

TEXT_TASK = Task(
    name="text-multi-label",
    pipeline_task="text-classification",
    card_name="Text Classification",
    inputs=LabelSetTextInputs(),
    problem=MultiLabel(),
    capabilities=CAPABILITIES,
    example_input='"The service was slow but the food was wonderful."',
    auto_model="AutoModelForSequenceClassification",
)

IMAGE_TASK = Task(
    name="image-multi-label",
    pipeline_task="image-classification",
    card_name="Image Classification",
    inputs=LabelSetImageInputs(),
    problem=TEXT_TASK.problem,
    capabilities=CAPABILITIES,
    example_input='"path/to/image.jpg"',
    auto_model="AutoModelForImageClassification",
)
