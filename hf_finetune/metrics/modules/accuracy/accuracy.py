"""Accuracy: the share of predictions that equal the reference."""

import evaluate
from sklearn.metrics import accuracy_score

from hf_finetune.metrics.modules.base import as_number_or_list, class_id_info


class Accuracy(evaluate.Metric):
    def _info(self):
        return class_id_info("accuracy_score", "Accuracy: the share of predictions equal to the reference.")

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        value = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": as_number_or_list(value)}
