"""The data stage: raw splits -> label space -> model-ready splits, for text and vision alike.

    load_raw_splits      Hub dataset, local files, image folder
    select_splits        train / validation / test as the recipe names them
    check_columns        the input and label columns exist in every split
    build_label_space    class names in order; unseen or missing labels are errors
    carve                when the data has no validation split (seeded, stratified; fingerprinted: carved.py)
    cap_rows             per-split sample caps for quick runs
    encodings           the task's choice: text tokenized once, cached; images decoded + transformed on the fly
    streaming            data.streaming: the same stages on iterable datasets, read as training goes (streaming.py)

`build_eval_dataset` is the same stage for one split scored by a finished model: the label space is
the model's, and a label it does not know is an error.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from hf_finetune.data.carved import carve
from hf_finetune.data.encodings import ImageEncoding, TextEncoding, encoding_from
from hf_finetune.data.encodings import default_cache_dir as default_cache_dir
from hf_finetune.data.labels import ClassLabeling, LabelSpace
from hf_finetune.data.sources import load_raw_splits
from hf_finetune.data.splits import (
    ROLES,
    append_rows,
    cap_rows,
    check_columns,
    select_splits,
)
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
    carved: dict[str, Any] | None = None  # how validation was carved from train (data/carved.py), for run.json
    label_notes: dict[str, Any] = field(default_factory=dict)  # what the labeling found (tags: scheme, malformed)
    # data.streaming: the splits are IterableDatasets; `head` is the labelled first rows of train, read where
    # the run counts classes (class weights, data-aware defaults, the baseline)
    head: Dataset | None = None
    streaming: bool = False
    pseudo_rows: int = 0  # self-training: the last rows of train are pseudo-labels (build_datasets' extra_train)

    @property
    def sizes(self) -> dict[str, int | None]:
        """Rows per role; None for a stream (its length is never known)."""
        return {role: len(ds) if isinstance(ds, Dataset) else None for role, ds in self.splits.items()}

    @property
    def label_rows(self) -> Dataset:
        """The labelled training rows the run counts classes on: train, or the head of a training stream."""
        return self.head if self.head is not None else self.splits["train"]


def build_datasets(
    recipe: Recipe,
    encoding: TextEncoding | ImageEncoding | None = None,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    data_config: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    pad_to_multiple_of: int | None = None,
    main_process_first: Any = contextlib.nullcontext,
    extra_train: Dataset | None = None,
    labeling: Any = None,
    process: tuple[int, int] = (0, 1),
) -> PreparedData:
    """Loads, checks, labels, splits and preprocesses the recipe's data.

    Args:
        recipe: the validated recipe.
        encoding: how inputs become model inputs (the task's choice, data/encodings.py); without
            it, built from the preprocessor given below.
        tokenizer, max_length: text only; the backbone's tokenizer and the resolved max length.
        data_config: vision only; the backbone's input size, mean, std, interpolation and crop.
        augment: vision only; extra timm `create_transform` arguments for training.
        pad_to_multiple_of: text only; pad batch lengths to a multiple (tensor cores like 8).
        main_process_first: context manager; under several processes the main one preprocesses and
            writes the caches first, the others then read them.
        extra_train: rows already in the label space (inputs and `labels`), appended to train after
            validation is carved and caps apply: self-training's pseudo-labels.
        labeling: how the label columns become `labels` and the label space (the task's; default one
            class per row, data/labels.ClassLabeling).
        process: (this process's index, the number of processes): with data.streaming, each process reads
            its own shard of the training stream (data/streaming.py).

    Raises:
        DataError: naming the recipe key, split, column, row or file that is wrong.
    """
    data = recipe.data
    labeling = labeling or ClassLabeling()
    encoding = encoding or encoding_from(tokenizer, max_length, data_config, augment, pad_to_multiple_of)
    if data.streaming:  # nothing is cached or written: every process opens its own streams
        from hf_finetune.data.streaming import build_streaming_datasets

        splits, labels, collator, sources, head = build_streaming_datasets(recipe, encoding, labeling, *process)
        return PreparedData(splits, labels, collator, sources, head=head, streaming=True)
    with main_process_first():
        raw = load_raw_splits(data)
        splits = select_splits(raw, data)
        check_columns(splits, data)
        names = {role: getattr(data.splits, role) for role in splits}
        splits = {role: encoding.read(recipe, ds, names[role]) for role, ds in splits.items()}
        splits, labels, notes = labeling.prepare(splits, recipe, names)
        sources = {role: f"split '{name}'" for role, name in names.items()}
        carved = None
        if "validation" not in splits:
            splits["train"], splits["validation"], carved = carve(splits["train"], data, stratify=labeling.stratify)
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

        encoded = encoding.prepare(recipe, splits, names)
        # The pseudo-labels stay the last rows of train: an image skipped here as unreadable is a labelled row's,
        # since the pool's unreadable images were left out before the teacher labelled it (data/unlabeled.py).
        prepared = PreparedData(encoded.splits, labels, encoded.collator, sources, cache=encoded.cache,
                                skipped_images=encoded.skipped, carved=carved, label_notes=notes,
                                pseudo_rows=len(extra_train) if extra_train is not None else 0)
    for role, ds in prepared.splits.items():
        logger.info("%-10s %7d rows from %s", role, len(ds), sources[role])
    return prepared


def build_eval_dataset(
    recipe: Recipe,
    split: str | None,
    model_labels: list[str],
    encoding: TextEncoding | ImageEncoding | None = None,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    data_config: dict[str, Any] | None = None,
    labeling: Any = None,
) -> tuple[PreparedData, str]:
    """One split of the recipe's data, preprocessed for evaluation, labelled in the model's label space.

    Args:
        recipe: a recipe whose `data` section names the data to score (columns included).
        split: the split to score; None takes the only split, else `test`.
        model_labels: the model's class names in id order (config.json `id2label`).
        encoding: the finished model's preprocessing (without it, built from the arguments below).
        tokenizer, max_length: text only, as for training.
        data_config: vision only; the model's input size, mean, std, interpolation and crop.
        labeling: the task's labeling (default one class per row).

    Returns:
        (the data, with the split under the role "eval", the name of the split scored).

    Raises:
        DataError: a missing split or column, or a label the model does not know, named.
    """
    data = recipe.data
    encoding = encoding or encoding_from(tokenizer, max_length, data_config)
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
    ds = encoding.read(recipe, ds, split)
    ds, space = (labeling or ClassLabeling()).prepare_eval(ds, recipe, split, model_labels)
    encoded = encoding.prepare(recipe, {"eval": ds}, {"eval": split})
    prepared = PreparedData(encoded.splits, space, encoded.collator, {"eval": f"split '{split}'"},
                            cache=encoded.cache, skipped_images=encoded.skipped)
    return prepared, split
