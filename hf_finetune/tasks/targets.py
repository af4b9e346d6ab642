"""The target space of the regression tasks: numeric target columns, checked, and standardised for training.

    columns     data.columns.targets (several), else data.columns.label (one); each must hold numbers
                (ints, floats, or strings that read as numbers: csv files); a null, NaN or infinite
                value, or a string that is no number, is an error naming the column, split and row
    scale       the mean and standard deviation of each target over the training split as read (before
                a validation carve), so every target trains at unit scale whatever its units (a price
                in dollars and a rating in stars learn at the same learning rate); a constant target
                (standard deviation 0) is an error: there is nothing to learn
    `labels`    a float list per row: (value - mean) / std for training; a finished model's data is read
                in original units (its head outputs them: tasks/regression.py folds the scale in)

The label space (`TargetSpace`) names the targets in output order (config.json's id2label) and carries
the scale; its problem_type ("regression") makes the backbones' own heads apply MSE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset, Sequence, Value

from hf_finetune.data.labels import LABEL_COLUMN, LabelSpace, row_hint
from hf_finetune.errors import DataError, show


@dataclass(frozen=True)
class TargetSpace(LabelSpace):
    """Target names in output order, and the training split's mean and std of each (original units)."""

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    problem_type: str = "regression"

    @property
    def scale(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}


def target_columns(recipe: Any) -> tuple[str, list[str]]:
    """(the recipe key that names them, the target columns)."""
    cols = recipe.data.columns
    if cols.targets:
        return "data.columns.targets", list(cols.targets)
    return "data.columns.label", [cols.label]


def _number(value: Any) -> float | None:
    """A value as a float, or None when it is no number (bools are no numbers: a class, not a score)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def read_targets(ds: Dataset, columns: list[str], key: str, split: str) -> np.ndarray:
    """The target values of a split as a (rows, targets) float array.

    Raises:
        DataError: naming the key, column, split and row of the first value that is no finite number.
    """
    out = np.empty((len(ds), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        feature = ds.features[column]
        numeric = isinstance(feature, Value) and feature.dtype.startswith(("int", "uint", "float", "double"))
        if not numeric and not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
            raise DataError(f"{key}: column '{column}' of split '{split}' holds {feature!r}; a regression target "
                            "must be a number per row")
        values = ds[column]
        for i, value in enumerate(values):
            number = _number(value)
            if number is None and value is not None:
                raise DataError(f"{key}: column '{column}' of split '{split}' holds {show(value)} at "
                                f"{row_hint(ds, i)}, not a number")
            if number is None or not math.isfinite(number):
                what = "no value (empty, null or NaN)" if number is None or math.isnan(number) else \
                    f"{number} (not a finite number)"
                raise DataError(f"{key}: column '{column}' of split '{split}' has {what} at {row_hint(ds, i)}; "
                                "every row needs a finite target (drop or fill those rows)")
            out[i, j] = number
    return out


def encode_targets(ds: Dataset, columns: list[str], values: np.ndarray, mean: np.ndarray, std: np.ndarray
                   ) -> Dataset:
    """Adds the float `labels` column ((value - mean) / std per target) and drops the raw target columns."""
    scaled = ((values - mean) / std).astype(np.float32)
    keep = [c for c in columns if c != LABEL_COLUMN]
    ds = ds.remove_columns(keep + ([LABEL_COLUMN] if LABEL_COLUMN in ds.column_names else []))
    return ds.add_column(LABEL_COLUMN, scaled.tolist(), feature=Sequence(Value("float32")))


class TargetLabeling:
    """The regression tasks' labeling: numeric targets, standardised by the training split's statistics."""

    stratify = False  # validation is carved plainly: there are no classes to keep in proportion

    def prepare(self, splits: dict[str, Dataset], recipe: Any, names: dict[str, str]
                ) -> tuple[dict[str, Dataset], TargetSpace, dict[str, Any]]:
        """(splits with standardised `labels`, the target space with the training scale, notes for the record)."""
        key, columns = target_columns(recipe)
        values = {role: read_targets(ds, columns, key, names[role]) for role, ds in splits.items()}
        train = values["train"]
        mean, std = train.mean(axis=0), train.std(axis=0)
        for j, column in enumerate(columns):
            if not std[j] > 0:
                raise DataError(f"{key}: column '{column}' of split '{names['train']}' is constant "
                                f"({train[0, j]:g} in every row); a regression target must vary")
        space = TargetSpace(names=tuple(columns), values=tuple(columns), mean=tuple(float(m) for m in mean),
                            std=tuple(float(s) for s in std))
        out = {role: encode_targets(ds, columns, values[role], mean, std) for role, ds in splits.items()}
        return out, space, {"targets": space.scale}

    def prepare_eval(self, ds: Dataset, recipe: Any, split: str, model_labels: list[str]) -> tuple[Dataset, TargetSpace]:
        """New data in original units, for a finished model (whose outputs are in original units)."""
        key, columns = target_columns(recipe)
        if list(model_labels) != columns:
            raise DataError(f"{key}: the model predicts {', '.join(model_labels)}; the recipe names "
                            f"{', '.join(columns)}")
        values = read_targets(ds, columns, key, split)
        zeros, ones = np.zeros(len(columns)), np.ones(len(columns))
        space = TargetSpace(names=tuple(columns), values=tuple(columns), mean=tuple(zeros), std=tuple(ones))
        return encode_targets(ds, columns, values, zeros, ones), space

    def preflight(self, splits: dict[str, Dataset], recipe: Any, names: dict[str, str], complete: bool
                  ) -> list[str] | None:
        """The target names, after every split's targets read as finite numbers (a constant one fails)."""
        self.prepare(splits, recipe, names)
        return target_columns(recipe)[1]

    def counts(self, train: Dataset, num_labels: int) -> Any:
        """No classes to count: one per target, so class-based defaults (imbalance) never fire."""
        return np.ones(num_labels, dtype=np.int64)
