"""Choose the train/validation/test splits, check their columns, carve validation, cap sizes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TypeVar

from datasets import Dataset, DatasetDict, concatenate_datasets

from hf_finetune.data.labels import LABEL_COLUMN
from hf_finetune.errors import DataError, did_you_mean
from hf_finetune.recipe import DataSpec

logger = logging.getLogger(__name__)

ROLES = ("train", "validation", "test")
T = TypeVar("T")


def named_splits(splits: Mapping[str, T], data: DataSpec) -> dict[str, T]:
    """Roles -> the splits (map-style or streamed) `data.splits` names, leaving out a missing validation
    or test the recipe did not name explicitly.

    Raises:
        DataError: the train split, or a split the recipe named, is not in `splits`.
    """
    available = list(splits)
    explicit = data.splits.model_fields_set
    out: dict[str, T] = {}
    for role in ROLES:
        name = getattr(data.splits, role)
        if name is None:
            continue
        if name in splits:
            out[role] = splits[name]
        elif role == "train" or role in explicit:
            raise DataError(
                f"data.splits.{role}: split '{name}' not found; the data has {', '.join(available)}"
                + did_you_mean(name, available)
            )
    return out


def select_splits(raw: DatasetDict, data: DataSpec) -> dict[str, Dataset]:
    """Maps roles (train, validation, test) to the dataset's splits as `data.splits` names them.

    A validation split the dataset lacks is carved from train later; a test split it lacks means no
    test score. Either is an error when the recipe named the split explicitly.
    """
    out = named_splits(raw, data)
    for role in ("validation", "test"):
        name = getattr(data.splits, role)
        if name is None or role in out:
            continue
        if role == "validation":
            logger.info("No '%s' split: carving validation from '%s' (data.validation_size)", name, data.splits.train)
        else:
            logger.info("No '%s' split: the run reports validation metrics only", name)
    for role, ds in out.items():
        if len(ds) == 0:
            raise DataError(f"data.splits.{role}: split '{getattr(data.splits, role)}' is empty: it has no rows")
    return out


def check_columns(splits: dict[str, Dataset], data: DataSpec, split_names: dict[str, str] | None = None) -> None:
    """Every split must hold the input and label columns the recipe names.

    Args:
        splits: role -> dataset.
        data: the recipe's data section.
        split_names: role -> the split's name in messages (default: the recipe's data.splits).
    """
    cols = data.columns
    wanted = [("text", cols.text), ("text_pair", cols.text_pair), ("image", cols.image), ("tokens", cols.tokens)]
    # the tags of each word replace the label of each row (token classification)
    if cols.labels:  # multi-label: one 0/1 column per label replaces the label column
        wanted += [(f"labels[{i}]", column) for i, column in enumerate(cols.labels)]
    else:  # numeric targets (regression) or a mask per image (semantic segmentation) replace the label column
        wanted += ([("tags", cols.tags)] if cols.tags is not None
                   else [("targets", column) for column in cols.targets] if cols.targets
                   else [("mask", cols.mask)] if cols.mask is not None else [("label", cols.label)])
    for role, ds in splits.items():
        present = [c for c in ds.column_names if c != "__source_file__"]
        for key, column in wanted:
            if column is not None and column not in ds.column_names:
                raise DataError(
                    f"data.columns.{key}: column '{column}' not found in split "
                    f"'{(split_names or {}).get(role) or getattr(data.splits, role)}' (columns: {', '.join(present)})"
                    + did_you_mean(column, present)
                )


def carve_validation(train: Dataset, size: float, seed: int, stratify: bool = True) -> tuple[Dataset, Dataset]:
    """Splits validation off train with a fixed seed, stratified by label when every class allows it
    (`stratify` False: rows whose labels are sequences, such as tagged sentences, are drawn plainly)."""
    test_size = int(size) if size >= 1 else size
    n_val = test_size if isinstance(test_size, int) else round(len(train) * test_size)
    if n_val < 1 or n_val >= len(train):
        raise DataError(
            f"data.validation_size: {size} of {len(train)} training rows leaves no rows for "
            f"{'validation' if n_val < 1 else 'training'}"
        )
    if not stratify:
        parts = train.train_test_split(test_size=test_size, seed=seed)
        logger.info("Carved %d validation rows from %d training rows (seed %d)", len(parts["test"]), len(train), seed)
        return parts["train"], parts["test"]
    num_classes = train.features[LABEL_COLUMN].num_classes
    counts = {}
    for label in train[LABEL_COLUMN]:
        counts[label] = counts.get(label, 0) + 1
    can_stratify = min(counts.values()) >= 2 and num_classes <= n_val <= len(train) - num_classes
    if can_stratify:
        parts = train.train_test_split(test_size=test_size, seed=seed, stratify_by_column=LABEL_COLUMN)
    else:
        logger.warning(
            "Validation carved from train without stratification: a class has fewer than 2 rows or "
            "the validation share is smaller than the number of classes"
        )
        parts = train.train_test_split(test_size=test_size, seed=seed)
    logger.info("Carved %d validation rows from %d training rows (seed %d)", len(parts["test"]), len(train), seed)
    return parts["train"], parts["test"]


def cap_rows(ds: Dataset, limit: int | None, seed: int) -> Dataset:
    """At most `limit` rows, drawn by a seeded shuffle (sources are often sorted by label)."""
    if limit is None or limit >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(limit))


def append_rows(train: Dataset, extra: Dataset) -> Dataset:
    """Train plus rows already in its label space (self-training's pseudo-labels), in the columns both hold.

    The extra rows carry the input columns and `labels`; columns only train has (other data columns)
    are dropped, since training reads only inputs and labels.
    """
    columns = [c for c in extra.column_names if c in train.column_names]
    missing = [c for c in extra.column_names if c not in columns and c != "__source_file__"]
    if missing:
        raise DataError(f"the training split has no column '{missing[0]}' for the extra rows "
                        f"(its columns: {', '.join(train.column_names)})")
    base = train.select_columns(columns)
    return concatenate_datasets([base, extra.select_columns(columns).cast(base.features)])
