"""Recall: the share of a class's members that are found (macro-averaged over classes by default)."""

import evaluate
from sklearn.metrics import recall_score

from hf_finetune.metrics.modules.base import as_number_or_list, class_id_info


class Recall(evaluate.Metric):
    def _info(self):
        return class_id_info("recall_score", "Recall: the share of a class's members that are found.")

    def _compute(self, predictions, references, labels=None, average="macro", sample_weight=None,
                 zero_division=0):
        value = recall_score(references, predictions, labels=labels, average=average,
                      sample_weight=sample_weight, zero_division=zero_division)
        return {"recall": as_number_or_list(value)}
