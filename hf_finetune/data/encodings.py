"""How one modality's inputs become model inputs, for every task that reads that modality.

    TextEncoding    tokenize once per split (batched, cached on disk); pad per batch in the collator
    ImageEncoding   decode + the backbone's timm transforms on the fly; unreadable images named or skipped

The task layer picks the encoding (hf_finetune/tasks); the data stage applies it without asking which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from hf_finetune.data.images import MAX_LISTED, prepare_image_column, scan_images
from hf_finetune.data.labels import LABEL_COLUMN
from hf_finetune.data.text import TextCollator, check_text_columns, tokenize_split
from hf_finetune.data.vision import ImageTransform, build_image_transforms, collate_images
from hf_finetune.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class Encoded:
    """Model-ready splits, their collator, and what preparing them left to report."""

    splits: dict[str, Dataset]
    collator: Any
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> {file, reused} (text)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # role -> unreadable files (images)


def default_cache_dir() -> Path:
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "hf_finetune"


def text_columns(recipe: Any) -> list[tuple[str, str]]:
    """(data.columns key, column) of the texts a text task reads: text, and text_pair when set."""
    cols = recipe.data.columns
    return [("text", cols.text)] + ([("text_pair", cols.text_pair)] if cols.text_pair else [])


@dataclass
class TextEncoding:
    """Tokenizes with the backbone's tokenizer at the run's max_length; the collator pads per batch."""

    tokenizer: Any
    max_length: int | None
    pad_to_multiple_of: int | None = None  # tensor cores like multiples of 8

    def read(self, recipe: Any, ds: Dataset, split: str) -> Dataset:
        """Texts need nothing before labels are read."""
        return ds

    def prepare(self, recipe: Any, splits: dict[str, Dataset], names: dict[str, str]) -> Encoded:
        data = recipe.data
        columns = text_columns(recipe)
        check_text_columns(splits, columns, names)
        cache_dir = Path(data.cache_dir) if data.cache_dir else default_cache_dir()
        pair = recipe.data.columns.text_pair
        out, cache = {}, {}
        for role, ds in splits.items():
            result = tokenize_split(ds, self.tokenizer, data.columns.text, pair, self.max_length, cache_dir,
                                    data.num_proc, description=f"tokenizing {role}")
            out[role] = result.dataset
            cache[role] = {"file": result.cache_file, "reused": result.reused_cache}
            if result.reused_cache:
                logger.info("%s: reusing tokenized cache %s", role, result.cache_file)
        return Encoded(out, TextCollator(self.tokenizer, self.pad_to_multiple_of), cache=cache)


@dataclass
class ImageEncoding:
    """Decodes images and applies the backbone's timm transforms (training ones on train when `augment`)."""

    data_config: dict[str, Any]
    augment: dict[str, Any] | None = None  # extra timm `create_transform` arguments; None: no randomness

    def read(self, recipe: Any, ds: Dataset, split: str) -> Dataset:
        """Image paths resolved and checked before any shuffling, so a missing file is named with its row."""
        return prepare_image_column(ds, recipe.data.columns.image, split)

    def prepare(self, recipe: Any, splits: dict[str, Dataset], names: dict[str, str]) -> Encoded:
        data, column = recipe.data, recipe.data.columns.image
        train_tf, eval_tf = build_image_transforms(self.data_config, self.augment)
        out, skipped = {}, {}
        for role, ds in splits.items():
            if data.verify_images:
                ds, bad = scan_images(ds, column, data.num_proc, names[role])
                if bad:
                    listed = listing(bad)
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
        return Encoded(out, collate_images, skipped=skipped)


def listing(bad: list[str]) -> str:
    """The first unreadable files, one per line, and how many more."""
    return "\n    ".join(bad[:MAX_LISTED]) + (f"\n    ... and {len(bad) - MAX_LISTED} more"
                                              if len(bad) > MAX_LISTED else "")


def encoding_from(tokenizer: Any = None, max_length: int | None = None, data_config: dict[str, Any] | None = None,
                  augment: dict[str, Any] | None = None, pad_to_multiple_of: int | None = None
                  ) -> TextEncoding | ImageEncoding:
    """The encoding for the preprocessor given: a tokenizer (texts) or a timm data config (images)."""
    if tokenizer is not None:
        return TextEncoding(tokenizer, max_length, pad_to_multiple_of)
    if data_config is not None:
        return ImageEncoding(data_config, augment)
    raise ValueError("build_datasets needs an encoding, a tokenizer or an image data_config")
