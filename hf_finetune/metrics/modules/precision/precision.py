"""Precision: the share of predicted members of a class that are correct (macro-averaged over classes by default)."""

import evaluate
from sklearn.metrics import precision_score

from hf_finetune.metrics.modules.base import as_number_or_list, class_id_info


class Precision(evaluate.Metric):
    def _info(self):
        return class_id_info("precision_score", "Precision: the share of predicted members of a class that are correct.")

    def _compute(self, predictions, references, labels=None, average="macro", sample_weight=None,
                 zero_division=0):
        value = precision_score(references, predictions, labels=labels, average=average,
                      sample_weight=sample_weight, zero_division=zero_division)
        return {"precision": as_number_or_list(value)}
