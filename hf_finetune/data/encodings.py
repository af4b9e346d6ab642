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
from datasets import Image as ImageFeature

from hf_finetune.data.images import MAX_LISTED, decode_image, prepare_image_column, scan_images
from hf_finetune.data.labels import LABEL_COLUMN
from hf_finetune.data.text import TextCollator, check_text_columns, tokenize_batch, tokenize_split
from hf_finetune.data.vision import PIXELS, ImageTransform, build_image_transforms, collate_images
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
        return Encoded(out, self.collator(), cache=cache)

    # --- data.streaming: the same encoding applied to streams as training reads them (data/streaming.py) ---

    def collator(self) -> TextCollator:
        return TextCollator(self.tokenizer, self.pad_to_multiple_of)

    def read_stream(self, recipe: Any, stream: Any, split: str) -> Any:
        return stream

    def check_head(self, recipe: Any, heads: dict[str, Dataset], names: dict[str, str]) -> None:
        """The text columns of the first rows hold text; a later empty text is named when it is read."""
        check_text_columns(heads, text_columns(recipe), names)

    def stream(self, recipe: Any, stream: Any, role: str, split: str, columns: list[str]) -> Any:
        """Tokenized on the fly (batched `map`), nothing cached: the stream is read once per pass. `columns`: what
        the stream holds (its head's columns)."""
        cols = recipe.data.columns
        tokenize = StreamTokenizer(self.tokenizer, cols.text, cols.text_pair, self.max_length, split)
        return stream.map(tokenize, batched=True, remove_columns=[c for c in columns if c != LABEL_COLUMN])


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

    # --- data.streaming: images decoded and transformed as training reads them (data/streaming.py) ---

    def collator(self) -> Any:
        return collate_images

    def read_stream(self, recipe: Any, stream: Any, split: str) -> Any:
        """Images stay undecoded until the transform reads them, so an unreadable one is named, not raised
        from inside `datasets`; a column of file paths is map-style only (paths resolve against their file)."""
        column = recipe.data.columns.image
        feature = (stream.features or {}).get(column)
        if feature is None and stream.features is not None:
            return stream  # a missing column is named by check_columns, on the head
        if not isinstance(feature, ImageFeature):
            held = repr(feature) if feature is not None else "values whose type the stream does not declare"
            raise DataError(f"data.columns.image: column '{column}' of split '{split}' holds {held}; a stream "
                            "(data.streaming) reads images stored in the data (image folders, parquet, tar shards, "
                            "Hub datasets), not file paths: set data.streaming: false to read paths")
        return stream.cast_column(column, ImageFeature(decode=False))

    def check_head(self, recipe: Any, heads: dict[str, Dataset], names: dict[str, str]) -> None:
        """Images are decoded as training reads them (data.bad_images: error stops at the first unreadable one)."""

    def stream(self, recipe: Any, stream: Any, role: str, split: str, columns: list[str]) -> Any:
        """Decoded and transformed on the fly: training's transform (augmented) on train, evaluation's elsewhere.
        `columns`: what the stream holds (its head's columns)."""
        data = recipe.data
        train_tf, eval_tf = build_image_transforms(self.data_config, self.augment)
        transform = StreamImages(data.columns.image, train_tf if role == "train" else eval_tf,
                                 data.bad_images == "skip", split)
        return stream.map(transform, batched=True, batch_size=64,
                          remove_columns=[c for c in columns if c != LABEL_COLUMN])


class StreamTokenizer:
    """`IterableDataset.map` function: a batch of rows -> token ids; an empty text stops the run naming it."""

    def __init__(self, tokenizer: Any, text: str, text_pair: str | None, max_length: int | None, split: str):
        self.tokenizer, self.text, self.text_pair, self.max_length, self.split = (tokenizer, text, text_pair,
                                                                                  max_length, split)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        for key, column in (("text", self.text), ("text_pair", self.text_pair)):
            if column is not None and any(not isinstance(v, str) or not v.strip() for v in batch[column]):
                raise DataError(f"data.columns.{key}: column '{column}' of split '{self.split}' has an empty (null, "
                                "empty or whitespace-only) row in the stream")
        return tokenize_batch(batch, self.tokenizer, self.text, self.text_pair, self.max_length)


class StreamImages:
    """`IterableDataset.map` function: decode + transform each image; an unreadable one stops the run naming it,
    or (data.bad_images: skip) is left out with a warning."""

    def __init__(self, column: str, transform: Any, skip_bad: bool, split: str):
        self.column, self.transform, self.skip_bad, self.split = column, transform, skip_bad, split

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        pixels, labels = [], []
        for value, label in zip(batch[self.column], batch[LABEL_COLUMN], strict=True):
            try:
                image = decode_image(value)
            except DataError as exc:
                if not self.skip_bad:
                    raise DataError(f"data.columns.image: an unreadable image in split '{self.split}' (set "
                                    f"data.bad_images: skip to train without it): {exc}") from None
                logger.warning("%s: skipping an unreadable image: %s", self.split, exc)
                continue
            pixels.append(self.transform(image))
            labels.append(label)
        return {PIXELS: pixels, LABEL_COLUMN: labels}


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
