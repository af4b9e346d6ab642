"""The unlabelled pool (data.unlabeled): loaded from files, a split of the recipe's data, or a folder of images.

The pool holds the recipe's input columns. A label column there (data.columns.label) is never
trained on: it is kept apart, as the pool's true labels, to score the pseudo-labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from hf_finetune.data.sources import load_files, load_raw_splits
from hf_finetune.data.splits import cap_rows
from hf_finetune.errors import DataError, did_you_mean
from hf_finetune.recipe import Recipe

logger = logging.getLogger(__name__)

SOURCE_COLUMN = "__source_file__"
TRUTH_COLUMN = "__pool_label__"  # the pool's own labels, apart from anything training reads


@dataclass
class Pool:
    """Unlabelled rows: the input columns (and the source file), plus their true labels where known."""

    rows: Dataset  # input columns, SOURCE_COLUMN; images typed as undecoded `datasets.Image`
    truth: list | None  # the raw value of the pool's label column per row (None: unknown), or None
    truth_feature: object  # that column's `datasets` feature
    key: str  # the recipe key that names the pool, for messages
    where: str  # the pool's files, split or folder, for messages and the record

    def __len__(self) -> int:
        return len(self.rows)


def _image_files(folder: Path) -> list[str]:
    from PIL import Image

    suffixes = {s.lower() for s in Image.registered_extensions()}
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _raw_pool(recipe: Recipe) -> tuple[Dataset, str, str]:
    spec = recipe.data.unlabeled
    if spec.files is not None:
        key = "data.unlabeled.files"
        return load_files(spec.files, key), key, ", ".join(spec.files)
    if spec.image_folder is not None:
        key, folder = "data.unlabeled.image_folder", Path(spec.image_folder)
        files = _image_files(folder)
        if not files:
            raise DataError(f"{key}: no images found under {folder} (the pool is empty)")
        column = recipe.data.columns.image
        return Dataset.from_dict({column: files, SOURCE_COLUMN: files}), key, str(folder)
    key = "data.unlabeled.split"
    raw = load_raw_splits(recipe.data)
    if spec.split not in raw:
        raise DataError(f"{key}: split '{spec.split}' not found; the data has {', '.join(raw)}"
                        + did_you_mean(spec.split, list(raw)))
    return raw[spec.split], key, f"split '{spec.split}'"


def load_pool(recipe: Recipe, inputs: Any) -> Pool:
    """Loads and checks the recipe's unlabelled pool.

    `inputs`: what the recipe's task reads (tasks/base.py `Inputs`): its input columns, and which
    rows a model of it can read (`usable_rows`).

    Rows with an empty text are left out (with a warning); unreadable images follow data.bad_images.

    Raises:
        DataError: an empty pool, a missing or mistyped input column (named with the pool's files),
            image paths that do not exist.
    """
    data, cols = recipe.data, recipe.data.columns
    ds, key, where = _raw_pool(recipe)
    if len(ds) == 0:
        raise DataError(f"{key}: the unlabelled pool ({where}) is empty: it has no rows")
    columns = inputs.columns(recipe)
    present = [c for c in ds.column_names if c != SOURCE_COLUMN]
    for input_key, column in columns:
        if column not in ds.column_names:
            raise DataError(f"{key}: column '{column}' (data.columns.{input_key}) not found in the unlabelled pool "
                            f"({where}; columns: {', '.join(present)})" + did_you_mean(column, present))
    if SOURCE_COLUMN not in ds.column_names:
        ds = ds.add_column(SOURCE_COLUMN, [where] * len(ds))
    label = cols.label if cols.label in ds.column_names else None
    if label == TRUTH_COLUMN or label is not None and label in dict(columns).values():
        label = None
    keep = [c for _, c in columns] + [SOURCE_COLUMN] + ([label] if label else [])
    ds = ds.select_columns(keep)
    if label is not None:
        ds = ds.rename_column(label, TRUTH_COLUMN)

    spec = data.unlabeled
    if spec.max_samples is not None and spec.max_samples < len(ds):  # before the per-row checks: less to read
        ds = cap_rows(ds, spec.max_samples, data.seed)
        where += f", {spec.max_samples} rows drawn (data.unlabeled.max_samples, seed {data.seed})"
    ds = inputs.usable_rows(ds, recipe, key, where)  # empty texts left out; unreadable images per data.bad_images
    truth, feature = None, None
    if TRUTH_COLUMN in ds.column_names:
        feature = ds.features[TRUTH_COLUMN]
        truth = ds[TRUTH_COLUMN]
        ds = ds.remove_columns(TRUTH_COLUMN)
    return Pool(ds, truth, feature, key, where)


def describe_pool(recipe: Recipe, inputs: Any) -> str:
    """Loads and checks the pool (pre-flight); one line saying what it holds."""
    pool = load_pool(recipe, inputs)
    known = sum(v is not None for v in pool.truth) if pool.truth is not None else 0
    return f"{len(pool)} unlabelled rows from {pool.where}" + (
        f" ({known} with a label column: only to score the pseudo-labels)" if known else "")
