"""The self-training side of the unlabelled pool: loaded for the recipe's task, true labels as class ids,
kept rows as pseudo-labelled training rows. Reading and checking the pool itself is the data stage's
(data/unlabeled.py).
"""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset

from hf_finetune.data.labels import LABEL_COLUMN, LabelSpace
from hf_finetune.data.unlabeled import Pool
from hf_finetune.data.unlabeled import load_pool as load_task_pool
from hf_finetune.errors import DataError
from hf_finetune.recipe import Recipe
from hf_finetune.tasks import task_of


def load_pool(recipe: Recipe) -> Pool:
    """The recipe's unlabelled pool, with the rows its task can read (data/unlabeled.py)."""
    return load_task_pool(recipe, task_of(recipe).inputs)


def truth_ids(pool: Pool, labels: LabelSpace) -> np.ndarray | None:
    """The pool's true labels as class ids (-1 where unknown), or None when the pool has no label column.

    Raises:
        DataError: a label the training split does not have, named.
    """
    if pool.truth is None:
        return None
    values = pool.truth
    if isinstance(pool.truth_feature, ClassLabel):
        names = pool.truth_feature.names
        values = [names[v] if v is not None and v >= 0 else None for v in values]
    mapping: dict[object, int] = {}
    for value, idx in labels.value_to_id().items():
        mapping[value] = mapping[str(value)] = idx
    for idx, name in enumerate(labels.names):
        mapping.setdefault(name, idx)
    out = np.full(len(values), -1, dtype=np.int64)
    for row, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value not in mapping:
            value = str(value)  # integers in a file, for class names that are digits (an image folder's 0..9)
        if value not in mapping:
            raise DataError(f"data.columns.label: the unlabelled pool ({pool.where}) has label '{value}' (row {row}), "
                            f"which the training split does not have; training labels: {', '.join(labels.names)}")
        out[row] = mapping[value]
    return out


def pseudo_labelled_rows(pool: Pool, indices: np.ndarray, labels: np.ndarray, space: LabelSpace) -> Dataset:
    """The kept pool rows with their pseudo-labels, as rows to append to the training split."""
    rows = pool.rows.select(indices.tolist())
    rows = rows.add_column(LABEL_COLUMN, labels.tolist())
    return rows.cast_column(LABEL_COLUMN, ClassLabel(names=list(space.names)))

