"""F1: the harmonic mean of precision and recall (macro-averaged over classes by default)."""

import evaluate
from sklearn.metrics import f1_score

from hf_finetune.metrics.modules.base import as_number_or_list, class_id_info


class F1(evaluate.Metric):
    def _info(self):
        return class_id_info("f1_score", "F1: the harmonic mean of precision and recall.")

    def _compute(self, predictions, references, labels=None, average="macro", sample_weight=None,
                 zero_division=0):
        value = f1_score(references, predictions, labels=labels, average=average,
                      sample_weight=sample_weight, zero_division=zero_division)
        return {"f1": as_number_or_list(value)}
