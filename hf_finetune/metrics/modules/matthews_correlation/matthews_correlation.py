"""Matthews correlation coefficient: a balanced score for any number of classes (-1 to 1)."""

import evaluate
from sklearn.metrics import matthews_corrcoef

from hf_finetune.metrics.modules.base import as_number_or_list, class_id_info


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return class_id_info("matthews_corrcoef", "Matthews correlation coefficient.")

    def _compute(self, predictions, references, sample_weight=None):
        value = matthews_corrcoef(references, predictions, sample_weight=sample_weight)
        return {"matthews_correlation": as_number_or_list(value)}
