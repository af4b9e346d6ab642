"""The label space of multi-label classification: a set of labels per row, read into a 0/1 row per label.

Three ways to give the label sets, each checked in full with errors naming the key, split, row and file:

    data.columns.labels: [a, b, c]     one 0/1 column per label (0/1 integers, booleans, 0.0/1.0); the
                                       column names are the labels, in that order
    data.columns.label + a list        a column holding a list of label names per row ([] is "no label")
    data.columns.label + separator     a string column split on `data.label_separator` ("a|b"; empty is
                                       "no label")

Labels come from the training split (sorted; `data.label_names` fixes their order); a label that only
another split holds is an error, as is a label no training row carries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset, List, Value

from hf_finetune.data.labels import LABEL_COLUMN, LabelSpace, row_hint
from hf_finetune.errors import DataError, show

PROBLEM_TYPE = "multi_label_classification"  # config.problem_type: BCE with logits in the model's own head


class PositiveCounts(np.ndarray):
    """Training rows per label (the positives the loss sees), with the number of training rows."""

    rows: int = 0


def positive_counts(matrix: np.ndarray) -> PositiveCounts:
    out = np.asarray(matrix).sum(axis=0).astype(np.int64).view(PositiveCounts)
    out.rows = int(len(matrix))
    return out


def _is_string(feature: Any) -> bool:
    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


def _label_key(recipe: Any) -> str:
    return "data.columns.labels" if recipe.data.columns.labels else "data.columns.label"


def read_label_sets(ds: Dataset, recipe: Any, split: str) -> tuple[list[str] | None, list[list[str]] | np.ndarray]:
    """One split's labels: (column labels, a 0/1 matrix) for 0/1 columns, else (None, a list of names per row).

    Raises:
        DataError: a value that is not 0/1, a list where a delimited string is expected or the reverse, a
            missing value, naming the recipe key, split, column and row.
    """
    data = recipe.data
    if data.columns.labels:
        columns = list(data.columns.labels)
        matrix = np.zeros((len(ds), len(columns)), dtype=np.float32)
        for j, column in enumerate(columns):
            feature = ds.features[column]
            if not (isinstance(feature, Value) and (feature.dtype == "bool" or feature.dtype.startswith(
                    ("int", "uint", "float")))):
                raise DataError(f"data.columns.labels: column '{column}' of split '{split}' holds {feature!r}; each "
                                "label column holds 0 or 1 per row (integers, booleans or 0.0/1.0)")
            values = ds[column]
            for row, value in enumerate(values):
                if value is None or float(value) not in (0.0, 1.0):
                    raise DataError(f"data.columns.labels: column '{column}' of split '{split}' {row_hint(ds, row)} "
                                    f"holds {show(value)}; each label column holds 0 or 1")
            matrix[:, j] = np.asarray(values, dtype=np.float32)
        return columns, matrix
    column, separator = data.columns.label, data.label_separator
    feature = ds.features[column]
    inner = getattr(feature, "feature", None)
    sets: list[list[str]] = []
    if separator is not None:
        if inner is not None:
            raise DataError(f"data.label_separator: column '{column}' of split '{split}' already holds lists of "
                            f"labels ({feature!r}); remove data.label_separator")
        if not _is_string(feature):
            raise DataError(f"data.columns.label: column '{column}' of split '{split}' holds {feature!r}, not "
                            f"strings to split on data.label_separator ({show(separator)})")
        for value in ds[column]:  # null or empty: no label (an empty cell of a CSV file)
            sets.append(_unique([p.strip() for p in (value or "").split(separator) if p.strip()]))
        return None, sets
    if inner is None or not (_is_string(inner) or (isinstance(inner, Value) and inner.dtype.startswith(
            ("int", "uint")))):
        hint = (" (to split a delimited string such as 'a|b', set data.label_separator)" if _is_string(feature)
                else "")
        raise DataError(f"data.columns.label: column '{column}' of split '{split}' holds {feature!r}; multi-label "
                        f"classification reads a list of label names per row{hint}, or one 0/1 column per label "
                        "(data.columns.labels)")
    for row, value in enumerate(ds[column]):
        if value is None or any(v is None for v in value):
            raise DataError(f"data.columns.label: split '{split}' {row_hint(ds, row)} has a missing (null) label "
                            "list or label; an empty list means no label")
        sets.append(_unique([str(v) for v in value]))
    return None, sets


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def label_set_space(columns: list[str] | None, train_sets: Any, recipe: Any) -> LabelSpace:
    """The labels in order: the 0/1 columns' order, else `data.label_names`, else the training labels sorted."""
    data = recipe.data
    if columns is not None:
        names = list(columns)
        empty = [c for c, n in zip(columns, np.asarray(train_sets).sum(axis=0), strict=True) if n == 0]
        if empty:
            raise DataError(f"data.columns.labels: column '{empty[0]}' is 0 in every row of split "
                            f"'{data.splits.train}': no training row carries the label, nothing to learn")
    else:
        seen = sorted({name for labels in train_sets for name in labels})
        if data.label_names is not None:
            unknown = [n for n in seen if n not in data.label_names]
            if unknown:
                raise DataError(f"data.label_names: does not list the training label '{unknown[0]}'")
            names = list(data.label_names)
        else:
            names = seen
    if len(names) < 2:
        raise DataError(f"{_label_key(recipe)}: split '{data.splits.train}' has "
                        f"{'one label' if names else 'no label at all'}"
                        f"{' (' + names[0] + ')' if names else ''}; multi-label classification needs at least two")
    return LabelSpace(names=tuple(names), values=tuple(names), problem_type=PROBLEM_TYPE)


def to_matrix(ds: Dataset, read: Any, space: LabelSpace, split: str, known_from: str, key: str) -> np.ndarray:
    """The label sets as a 0/1 matrix in the space's order; a label the space lacks is an error naming the row."""
    if isinstance(read, np.ndarray):
        return read
    ids = space.label2id
    matrix = np.zeros((len(read), space.num_labels), dtype=np.float32)
    for row, labels in enumerate(read):
        for name in labels:
            if name not in ids:
                raise DataError(f"{key}: split '{split}' {row_hint(ds, row)} has label '{name}' that does not appear "
                                f"in {known_from}; labels: {', '.join(space.names)}")
            matrix[row, ids[name]] = 1.0
    return matrix


def encode(ds: Dataset, matrix: np.ndarray, recipe: Any) -> Dataset:
    """A `labels` column of 0/1 floats per label (what BCE reads); the raw label columns go."""
    cols = recipe.data.columns
    drop = [c for c in (cols.labels or [cols.label]) if c in ds.column_names]
    ds = ds.remove_columns(drop)
    return ds.add_column(LABEL_COLUMN, matrix.tolist(), feature=List(Value("float32")))


class LabelSetLabeling:
    """The data stage's labeling for multi-label classification (data/__init__.build_datasets applies it)."""

    stratify = False  # label sets do not stratify; validation is drawn plainly (seeded)

    def prepare(self, splits: dict[str, Dataset], recipe: Any, names: dict[str, str]
                ) -> tuple[dict[str, Dataset], LabelSpace, dict[str, Any]]:
        read = {role: read_label_sets(ds, recipe, names[role]) for role, ds in splits.items()}
        columns, train_sets = read["train"]
        space = label_set_space(columns, train_sets, recipe)
        key = _label_key(recipe)
        encoded = {}
        for role, ds in splits.items():
            known = "the training split" if role != "train" else "data.label_names"
            matrix = to_matrix(ds, read[role][1], space, names[role], known, key)
            encoded[role] = encode(ds, matrix, recipe)
        source = ("0/1 columns" if columns else f"lists split on {recipe.data.label_separator!r}"
                  if recipe.data.label_separator else "lists of names")
        return encoded, space, {"label_sets": source}

    def prepare_eval(self, ds: Dataset, recipe: Any, split: str, model_labels: list[str]) -> tuple[Dataset, LabelSpace]:
        """New labelled data in a finished model's labels (0/1 columns must name the model's labels)."""
        space = LabelSpace(names=tuple(model_labels), values=tuple(model_labels), problem_type=PROBLEM_TYPE)
        columns, read = read_label_sets(ds, recipe, split)
        if columns is not None and columns != list(model_labels):
            raise DataError(f"data.columns.labels: names {', '.join(columns)}; the model's labels are "
                            f"{', '.join(model_labels)} (the same columns in the same order)")
        matrix = to_matrix(ds, read, space, split, "the model's labels", _label_key(recipe))
        return encode(ds, matrix, recipe), space

    def preflight(self, splits: dict[str, Dataset], recipe: Any, names: dict[str, str], complete: bool
                  ) -> list[str] | None:
        """The labels when the splits are complete (every row checked), else None (the sample is checked)."""
        if not complete:
            for role, ds in splits.items():
                read_label_sets(ds, recipe, names[role])
            return None
        return list(self.prepare(splits, recipe, names)[1].names)

    def counts(self, train: Dataset, num_labels: int) -> PositiveCounts:
        """Training rows per label, and the number of training rows (`.rows`)."""
        matrix = np.asarray(train[LABEL_COLUMN], dtype=np.float32).reshape(-1, num_labels)
        return positive_counts(matrix)

    def balanced_weights(self, train: Dataset, names: Any) -> dict[str, float]:
        """BCE's pos_weight per label for finetune.class_weights: balanced (metrics/multi_label.pos_weights)."""
        from hf_finetune.metrics.multi_label import pos_weights

        counts = self.counts(train, len(names))
        return dict(zip(names, pos_weights(counts, counts.rows), strict=True))
