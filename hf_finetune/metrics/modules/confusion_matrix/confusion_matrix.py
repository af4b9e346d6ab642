"""Confusion matrix: rows are true classes, columns predicted classes."""

import evaluate
from sklearn.metrics import confusion_matrix

from hf_finetune.metrics.modules.base import as_number_or_list, class_id_info


class ConfusionMatrix(evaluate.Metric):
    def _info(self):
        return class_id_info("confusion_matrix", "Confusion matrix: rows are true classes, columns predictions.")

    def _compute(self, predictions, references, labels=None, sample_weight=None, normalize=None):
        value = confusion_matrix(references, predictions, labels=labels, sample_weight=sample_weight,
                                 normalize=normalize)
        return {"confusion_matrix": as_number_or_list(value)}
