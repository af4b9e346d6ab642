"""The data stage: raw splits -> label space -> model-ready splits, for text and vision alike.

    load_raw_splits      Hub dataset, local files, image folder
    select_splits        train / validation / test as the recipe names them
    check_columns        the input and label columns exist in every split
    build_label_space    class names in order; unseen or missing labels are errors
    carve_validation     when the data has no validation split (seeded, stratified)
    cap_rows             per-split sample caps for quick runs
    text: tokenize once, cached; pad per batch     vision: decode + timm transforms on the fly

`build_eval_dataset` is the same stage for one split scored by a finished model: the label space is
the model's, and a label it does not know is an error.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset

from hf_finetune.data.images import MAX_LISTED, prepare_image_column, scan_images
from hf_finetune.data.labels import (
    LABEL_COLUMN,
    LabelSpace,
    build_label_space,
    check_split_labels,
    encode_labels,
    model_label_space,
)
from hf_finetune.data.sources import load_raw_splits
from hf_finetune.data.splits import (
    ROLES,
    append_rows,
    cap_rows,
    carve_validation,
    check_columns,
    select_splits,
)
from hf_finetune.data.text import TextCollator, check_text_columns, tokenize_split
from hf_finetune.data.vision import ImageTransform, build_image_transforms, collate_images
from hf_finetune.errors import DataError, did_you_mean
from hf_finetune.recipe import Recipe

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Model-ready splits and what the run needs to know about them."""

    splits: dict[str, Dataset]  # role (train, validation, test) -> dataset
    labels: LabelSpace
    collator: Any
    sources: dict[str, str]  # role -> where its rows came from, for the log and the model card
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> {file, reused}
    skipped_images: dict[str, list[str]] = field(default_factory=dict)  # role -> unreadable files

    @property
    def sizes(self) -> dict[str, int]:
        return {role: len(ds) for role, ds in self.splits.items()}


def default_cache_dir() -> Path:
    return Path(datasets.config.HF_DATASETS_CACHE) / "hf_finetune"


def build_datasets(
    recipe: Recipe,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    data_config: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    pad_to_multiple_of: int | None = None,
    main_process_first: Any = contextlib.nullcontext,
    extra_train: Dataset | None = None,
) -> PreparedData:
    """Loads, checks, labels, splits and preprocesses the recipe's data.

    Args:
        recipe: the validated recipe.
        tokenizer, max_length: text only; the backbone's tokenizer and the resolved max length.
        data_config: vision only; the backbone's input size, mean, std, interpolation and crop.
        augment: vision only; extra timm `create_transform` arguments for training.
        pad_to_multiple_of: text only; pad batch lengths to a multiple (tensor cores like 8).
        main_process_first: context manager; under several processes the main one preprocesses and
            writes the caches first, the others then read them.
        extra_train: rows already in the label space (inputs and `labels`), appended to train after
            validation is carved and caps apply: self-training's pseudo-labels.

    Raises:
        DataError: naming the recipe key, split, column, row or file that is wrong.
    """
    data = recipe.data
    cols = data.columns
    with main_process_first():
        raw = load_raw_splits(data)
        splits = select_splits(raw, data)
        check_columns(splits, data)
        names = {role: getattr(data.splits, role) for role in splits}
        if recipe.is_vision:
            # Before any shuffling, so that a missing file is reported with its row in the source.
            splits = {role: prepare_image_column(ds, cols.image, names[role]) for role, ds in splits.items()}
        labels = build_label_space(splits, data.splits.train, cols.label, data.label_names)
        splits = {role: encode_labels(ds, cols.label, labels) for role, ds in splits.items()}
        sources = {role: f"split '{name}'" for role, name in names.items()}
        if "validation" not in splits:
            splits["train"], splits["validation"] = carve_validation(splits["train"], data.validation_size, data.seed)
            names["validation"] = f"{data.splits.train} (carved)"
            sources["validation"] = f"{len(splits['validation'])} rows carved from split '{data.splits.train}' (seed {data.seed})"
        for role in list(splits):
            splits[role] = cap_rows(splits[role], getattr(data.max_samples, role), data.seed)
            if getattr(data.max_samples, role) is not None:
                sources[role] += f", capped at {len(splits[role])} rows"
        if extra_train is not None:
            splits["train"] = append_rows(splits["train"], extra_train)
            sources["train"] += f", plus {len(extra_train)} pseudo-labelled rows of data.unlabeled"
        splits = {role: splits[role] for role in ROLES if role in splits}

        if recipe.is_text:
            splits, cache = _prepare_text(recipe, splits, names, tokenizer, max_length)
            prepared = PreparedData(splits, labels, TextCollator(tokenizer, pad_to_multiple_of), sources, cache=cache)
        else:
            splits, skipped = _prepare_vision(recipe, splits, names, data_config, augment)
            prepared = PreparedData(splits, labels, collate_images, sources, skipped_images=skipped)
    for role, ds in prepared.splits.items():
        logger.info("%-10s %7d rows from %s", role, len(ds), sources[role])
    return prepared


def build_eval_dataset(
    recipe: Recipe,
    split: str | None,
    model_labels: list[str],
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    data_config: dict[str, Any] | None = None,
) -> tuple[PreparedData, str]:
    """One split of the recipe's data, preprocessed for evaluation, labelled in the model's label space.

    Args:
        recipe: a recipe whose `data` section names the data to score (columns included).
        split: the split to score; None takes the only split, else `test`.
        model_labels: the model's class names in id order (config.json `id2label`).
        tokenizer, max_length: text only, as for training.
        data_config: vision only; the model's input size, mean, std, interpolation and crop.

    Returns:
        (the data, with the split under the role "eval", the name of the split scored).

    Raises:
        DataError: a missing split or column, or a label the model does not know, named.
    """
    data = recipe.data
    raw = load_raw_splits(data)
    available = list(raw)
    if split is None:
        if len(available) != 1 and "test" not in available:
            raise DataError(f"the data has splits {', '.join(available)}: name the one to score (--split)")
        split = available[0] if len(available) == 1 else "test"
    if split not in raw:
        raise DataError(f"split '{split}' not found; the data has {', '.join(available)}"
                        + did_you_mean(split, available))
    ds = raw[split]
    if len(ds) == 0:
        raise DataError(f"split '{split}' is empty: it has no rows")
    check_columns({"eval": ds}, data, split_names={"eval": split})
    column = data.columns.label
    if recipe.is_vision:
        ds = prepare_image_column(ds, data.columns.image, split)
    space = model_label_space(model_labels, ds.features[column], data.label_names)
    check_split_labels(ds, split, column, space, known_from="the model's labels", listed_as="the model's labels")
    ds = encode_labels(ds, column, space)
    if recipe.is_text:
        ready, cache = _prepare_text(recipe, {"eval": ds}, {"eval": split}, tokenizer, max_length)
        prepared = PreparedData(ready, space, TextCollator(tokenizer), {"eval": f"split '{split}'"}, cache=cache)
    else:
        ready, skipped = _prepare_vision(recipe, {"eval": ds}, {"eval": split}, data_config, None)
        prepared = PreparedData(ready, space, collate_images, {"eval": f"split '{split}'"}, skipped_images=skipped)
    return prepared, split


def _prepare_text(recipe: Recipe, splits: dict[str, Dataset], names: dict[str, str], tokenizer: Any,
                  max_length: int | None) -> tuple[dict[str, Dataset], dict[str, dict[str, Any]]]:
    cols, data = recipe.data.columns, recipe.data
    text_columns = [("text", cols.text)] + ([("text_pair", cols.text_pair)] if cols.text_pair else [])
    check_text_columns(splits, text_columns, names)
    cache_dir = Path(data.cache_dir) if data.cache_dir else default_cache_dir()
    out, cache = {}, {}
    for role, ds in splits.items():
        result = tokenize_split(ds, tokenizer, cols.text, cols.text_pair, max_length, cache_dir, data.num_proc,
                                description=f"tokenizing {role}")
        out[role] = result.dataset
        cache[role] = {"file": result.cache_file, "reused": result.reused_cache}
        if result.reused_cache:
            logger.info("%s: reusing tokenized cache %s", role, result.cache_file)
    return out, cache


def _prepare_vision(recipe: Recipe, splits: dict[str, Dataset], names: dict[str, str],
                    data_config: dict[str, Any], augment: dict[str, Any] | None
                    ) -> tuple[dict[str, Dataset], dict[str, list[str]]]:
    data, column = recipe.data, recipe.data.columns.image
    train_tf, eval_tf = build_image_transforms(data_config, augment)
    out, skipped = {}, {}
    for role, ds in splits.items():
        if data.verify_images:
            ds, bad = scan_images(ds, column, data.num_proc, names[role])
            if bad:
                listed = "\n    ".join(bad[:MAX_LISTED]) + (f"\n    ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else "")
                if data.bad_images == "error":
                    raise DataError(
                        f"data.columns.image: {len(bad)} unreadable images in split '{names[role]}' "
                        f"(set data.bad_images: skip to train without them):\n    {listed}"
                    )
                logger.warning("%s: skipping %d unreadable images:\n    %s", role, len(bad), listed)
                skipped[role] = bad
                if len(ds) == 0:
                    raise DataError(f"data.columns.image: no readable image is left in split '{names[role]}'")
        keep = [column, LABEL_COLUMN]
        ds = ds.remove_columns([c for c in ds.column_names if c not in keep])
        ds.set_transform(ImageTransform(column, train_tf if role == "train" else eval_tf))
        out[role] = ds
    return out, skipped
