"""Reading images: path/bytes -> RGB PIL image, with unreadable files reported by path.

Image columns are kept undecoded (`datasets.Image(decode=False)`: a path and/or bytes per row) so
that every failure can name the file, and decoding happens on the fly in the data loader.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Image, Value
from PIL import Image as PILImage
from PIL import ImageOps

from hf_finetune.errors import DataError

logger = logging.getLogger(__name__)

OK_COLUMN = "__image_ok__"
ERROR_COLUMN = "__image_error__"
MAX_LISTED = 10  # bad files named in a message


class UnreadableImageError(DataError):
    """An image file that cannot be decoded; the message names it."""


def describe(value: Any) -> str:
    """The path of an image cell, or a description when it only holds bytes."""
    if isinstance(value, dict):
        return value.get("path") or "<image stored as bytes in the dataset>"
    if isinstance(value, str):
        return value
    return f"<{type(value).__name__}>"


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Converts any PIL mode to RGB the way a person would expect to see it.

    Transparent images are composited on white (dropping alpha would expose whatever colour the
    transparent pixels happen to hold), 16/32-bit grayscale is scaled to 8 bits rather than clipped,
    CMYK and palette images are converted, and EXIF rotation is applied.
    """
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = PILImage.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode.startswith("I") or mode == "F":
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        return PILImage.fromarray(array, mode="L").convert("RGB")
    return image.convert("RGB")


def decode_image(value: Any) -> PILImage.Image:
    """Opens an image cell (path, {path, bytes} or PIL image) fully and returns it as RGB.

    Raises:
        UnreadableImageError: naming the file when it is missing, truncated or not an image.
    """
    try:
        if isinstance(value, PILImage.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes") is not None:
            image = PILImage.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            image = PILImage.open(value["path"])
        elif isinstance(value, str):
            image = PILImage.open(value)
        else:
            raise UnreadableImageError(f"not an image: {value!r}")
        image.load()  # decode now: truncated files fail here, not later in a worker
        return to_rgb(image)
    except UnreadableImageError:
        raise
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
        raise UnreadableImageError(f"unreadable image {describe(value)}: {exc}") from None


def prepare_image_column(ds: Dataset, column: str, split: str) -> Dataset:
    """Types the image column as undecoded `Image`, resolving and checking file paths.

    Paths in csv/json files are relative to that file's folder. A column that holds neither images
    nor paths to existing files is an error naming the column.
    """
    feature = ds.features[column]
    key = "data.columns.image"
    if isinstance(feature, Image):
        return ds.cast_column(column, Image(decode=False))
    if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise DataError(
            f"{key}: column '{column}' of split '{split}' holds {feature!r}, not images or image file paths"
        )
    sources = ds["__source_file__"] if "__source_file__" in ds.column_names else [None] * len(ds)
    resolved, missing = [], []
    for row, (value, source) in enumerate(zip(ds[column], sources, strict=True)):
        if value is None or not str(value).strip():
            missing.append((row, "<empty>"))
            resolved.append("")
            continue
        path = Path(value).expanduser()
        if not path.is_absolute() and source is not None:
            path = Path(source).parent / path
        if not path.is_file():
            missing.append((row, value))
        resolved.append(str(path))
    if missing:
        listed = "; ".join(f"row {r}: {v!r}" for r, v in missing[:MAX_LISTED])
        hint = " (does this column hold image file paths?)" if len(missing) == len(ds) else ""
        raise DataError(
            f"{key}: column '{column}' of split '{split}': {len(missing)} of {len(ds)} rows name no existing "
            f"file{hint}: {listed}"
        )
    ds = ds.remove_columns(column).add_column(column, resolved)
    return ds.cast_column(column, Image(decode=False))


def _check_batch(batch: dict[str, list], indices: list[int], column: str) -> dict[str, list]:
    ok, errors = [], []
    for row, value in zip(indices, batch[column], strict=True):
        try:
            if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
                with PILImage.open(value["path"]) as image:
                    image.draft("RGB", (64, 64))  # JPEG: decode at reduced size, still reads every byte
                    image.load()
            else:
                decode_image(value)
            ok.append(True)
            errors.append("")
        except (UnreadableImageError, OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
            ok.append(False)
            reason = str(exc).removeprefix(f"unreadable image {describe(value)}: ")
            errors.append(f"{describe(value)} (row {row}): {reason}")
    return {OK_COLUMN: ok, ERROR_COLUMN: errors}


def scan_images(ds: Dataset, column: str, num_proc: int | None, split: str) -> tuple[Dataset, list[str]]:
    """Decodes every image once and splits off the unreadable ones.

    The scan is a `Dataset.map`, so `datasets` caches it: a second run over the same data is free.

    Returns:
        The rows whose image decodes, and '<path>: <reason>' for each row whose image does not.
    """
    checked = ds.map(
        _check_batch,
        batched=True,
        with_indices=True,
        batch_size=64,
        fn_kwargs={"column": column},
        num_proc=num_proc,
        desc=f"checking images ({split})",
    )
    flags = checked.with_format("arrow")[OK_COLUMN].to_pylist()
    bad_rows = [i for i, flag in enumerate(flags) if not flag]
    if not bad_rows:
        return ds, []
    bad = list(checked.select(bad_rows)[ERROR_COLUMN])
    kept = checked.filter(lambda ok: ok, input_columns=[OK_COLUMN], batched=False)
    return kept.remove_columns([OK_COLUMN, ERROR_COLUMN]), bad
