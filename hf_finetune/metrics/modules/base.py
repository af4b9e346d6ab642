"""Shared pieces of the bundled metric modules: integer class predictions against references."""

import datasets
import evaluate

INPUTS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
"""


def class_id_info(name: str, description: str) -> evaluate.MetricInfo:
    return evaluate.MetricInfo(
        description=description,
        citation="Pedregosa et al., Scikit-learn: Machine Learning in Python, JMLR 12, 2011.",
        inputs_description=INPUTS,
        features=datasets.Features(
            {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
        ),
        reference_urls=[f"https://scikit-learn.org/stable/modules/generated/sklearn.metrics.{name}.html"],
    )


def as_number_or_list(value):
    """sklearn returns numpy scalars or arrays; JSON wants floats and lists."""
    return value.tolist() if hasattr(value, "tolist") else float(value)
