"""Masks for semantic segmentation: reading, checking, the label space of pixels, joint augmentation.

    load_mask_folders     data.image_folder + data.mask_folder: one mask per image, same relative path and stem
    read_mask             a PNG of class ids (mode L, I or P: a palette PNG's indices are the class ids)
    scan_masks            every mask read once: unreadable, a size other than its image's, a class id
                          outside the label space: named errors with the file, before training
    MaskLabeling          the label space (data.label_names, data.label_names_file, or ids 0..max seen)
    MaskEncoding          image and mask moved together (torchvision transforms.v2, tv_tensors.Mask):
                          random resized crop (scale), horizontal flip; normalised by the backbone's own
                          mean and std; evaluation resizes to the model's size as pipeline() does

In the model-ready splits the ignored pixels (data.ignore_index, 255 by default) are -100, the
index the loss and the metrics skip.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Image, Value
from PIL import Image as PILImage

from hf_finetune.data.images import MAX_LISTED, decode_image, describe
from hf_finetune.data.labels import LABEL_COLUMN, LabelSpace
from hf_finetune.errors import DataError

logger = logging.getLogger(__name__)

IGNORED = -100  # a pixel the loss and the metrics skip, in model-ready labels
PIXELS_COLUMN = "__class_pixels__"  # pixels of each class in a training row's mask, for the baseline and weights
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
TRAIN_SCALE = (0.5, 1.0)  # random resized crop: share of the image area kept (mmseg's ratio range, as area)


# --- reading ------------------------------------------------------------------------------------------------


def _open(value: Any) -> PILImage.Image:
    if isinstance(value, PILImage.Image):
        return value
    if isinstance(value, dict) and value.get("bytes") is not None:
        return PILImage.open(io.BytesIO(value["bytes"]))
    if isinstance(value, dict) and value.get("path"):
        return PILImage.open(value["path"])
    if isinstance(value, str):
        return PILImage.open(value)
    raise DataError(f"not a mask: {value!r}")


def read_mask(value: Any) -> np.ndarray:
    """A mask cell (path, {path, bytes} or PIL image) as an (height, width) array of class ids.

    Raises:
        DataError: naming the file when it cannot be read or holds colours rather than class ids.
    """
    try:
        image = _open(value)
        image.load()
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
        raise DataError(f"unreadable mask {describe(value)}: {exc}") from None
    if image.mode in ("L", "P", "I", "I;16", "1"):
        return np.asarray(image, dtype=np.int64)
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image)[..., :3]
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0].astype(np.int64)  # grey saved as RGB: the ids are the grey levels
    raise DataError(f"mask {describe(value)} is a {image.mode} image in colour: a mask holds class ids "
                    "(a single-channel PNG, or a palette PNG whose indices are the class ids)")


def image_size(value: Any) -> tuple[int, int]:
    """(width, height) of an image cell, from its header."""
    try:
        with _open(value) as image:
            return image.size
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
        raise DataError(f"unreadable image {describe(value)}: {exc}") from None


def prepare_file_column(ds: Dataset, column: str, split: str, key: str) -> Dataset:
    """Types a column of images or paths (relative to their csv/json file) as undecoded `Image`."""
    feature = ds.features[column]
    if isinstance(feature, Image):
        return ds.cast_column(column, Image(decode=False))
    if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise DataError(f"{key}: column '{column}' of split '{split}' holds {feature!r}, not images or file paths")
    sources = ds["__source_file__"] if "__source_file__" in ds.column_names else [None] * len(ds)
    resolved, missing = [], []
    for row, (value, source) in enumerate(zip(ds[column], sources, strict=True)):
        path = Path(str(value or "")).expanduser()
        if not path.is_absolute() and source is not None:
            path = Path(source).parent / path
        if not value or not path.is_file():
            missing.append(f"row {row}: {value!r}")
        resolved.append(str(path))
    if missing:
        raise DataError(f"{key}: column '{column}' of split '{split}': {len(missing)} of {len(ds)} rows name no "
                        f"existing file: {'; '.join(missing[:MAX_LISTED])}")
    return ds.remove_columns(column).add_column(column, resolved).cast_column(column, Image(decode=False))


def load_mask_folders(image_folder: str, mask_folder: str | None, image_column: str = "image",
                      mask_column: str = "mask") -> DatasetDict:
    """Pairs every image under `image_folder` with the mask of the same relative path and stem (a .png)
    under `mask_folder` (None: `image_folder` holds images/ and masks/); train/validation/test
    sub-folders become splits, else everything is train."""
    if mask_folder is None:
        image_folder, mask_folder = str(Path(image_folder) / "images"), str(Path(image_folder) / "masks")
    images_root, masks_root = Path(image_folder), Path(mask_folder)
    subfolders = [p.name for p in sorted(images_root.iterdir()) if p.is_dir() and p.name in
                  ("train", "validation", "valid", "val", "test")] if images_root.is_dir() else []
    layout = {("validation" if name in ("valid", "val") else name): name for name in subfolders} or {"train": ""}
    out = {}
    for split, sub in layout.items():
        root = images_root / sub if sub else images_root
        images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise DataError(f"data.image_folder: no images found under {root}")
        masks, missing = [], []
        for image in images:
            rel = image.relative_to(images_root)
            mask = (masks_root / rel).with_suffix(".png")
            if not mask.is_file():
                missing.append(f"{image} (no {mask})")
            masks.append(str(mask))
        if missing:
            raise DataError(f"data.mask_folder: {len(missing)} images have no mask: "
                            + "; ".join(missing[:MAX_LISTED]))
        ds = Dataset.from_dict({image_column: [str(p) for p in images], mask_column: masks})
        out[split] = ds.cast_column(image_column, Image(decode=False)).cast_column(mask_column, Image(decode=False))
    return DatasetDict(out)


# --- the label space ----------------------------------------------------------------------------------------


def named_classes(data: Any) -> list[str] | None:
    """Class names from data.label_names or data.label_names_file (one per line, blank lines skipped)."""
    if data.label_names is not None:
        return list(data.label_names)
    if data.label_names_file is not None:
        try:
            lines = Path(data.label_names_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DataError(f"data.label_names_file: cannot read {data.label_names_file}: {exc}") from None
        names = [line.strip() for line in lines if line.strip()]
        if len(names) < 2 or len(set(names)) != len(names):
            raise DataError(f"data.label_names_file: {data.label_names_file} must name at least two classes, "
                            f"each once (found {len(names)} names, {len(set(names))} distinct)")
        return names
    return None


@dataclass
class Scan:
    """What reading one split's masks found."""

    pixels: list[list[int]]  # per row: pixels of each class id 0..max (ignored pixels left out)
    largest: int  # the largest class id seen (-1: none)


def scan_masks(ds: Dataset, recipe: Any, split: str, num_labels: int | None) -> Scan:
    """Reads every mask of a split once and checks it against its image and the label space.

    Raises:
        DataError: every unreadable mask, mask of another size than its image and class id outside
            0..num_labels-1 (other than data.ignore_index), naming the files (the first few of each).
    """
    data = recipe.data
    image_col, mask_col, ignore = data.columns.image, data.columns.mask, data.ignore_index
    unreadable, sizes, outside = [], [], []
    pixels: list[list[int]] = []
    largest = -1
    raw = ds.cast_column(image_col, Image(decode=False)).cast_column(mask_col, Image(decode=False)) \
        if isinstance(ds.features.get(image_col), Image) and isinstance(ds.features.get(mask_col), Image) else ds
    for image, mask in zip(raw[image_col], raw[mask_col], strict=True):
        try:
            ids = read_mask(mask)
        except DataError as exc:
            unreadable.append(str(exc))
            pixels.append([])
            continue
        try:
            width, height = image_size(image)
        except DataError as exc:
            unreadable.append(str(exc))
            pixels.append([])
            continue
        if ids.shape != (height, width):
            sizes.append(f"{describe(mask)} is {ids.shape[1]}x{ids.shape[0]}, its image {describe(image)} "
                         f"{width}x{height}")
        valid = ids[ids != ignore]
        top = int(valid.max()) if valid.size else -1
        if num_labels is not None and (top >= num_labels or (valid.size and int(valid.min()) < 0)):
            bad = sorted({int(v) for v in np.unique(valid) if v >= num_labels or v < 0})
            outside.append(f"{describe(mask)} holds {', '.join(map(str, bad[:5]))}")
        largest = max(largest, top)
        pixels.append(np.bincount(valid.clip(0), minlength=0).tolist() if valid.size else [])
    problems = []
    if unreadable:
        problems.append(f"{len(unreadable)} unreadable masks or images in split '{split}':\n    "
                        + "\n    ".join(unreadable[:MAX_LISTED]))
    if sizes:
        problems.append(f"{len(sizes)} masks in split '{split}' differ in size from their image:\n    "
                        + "\n    ".join(sizes[:MAX_LISTED]))
    if outside:
        problems.append(f"{len(outside)} masks in split '{split}' hold class ids outside the label space "
                        f"0..{(num_labels or 0) - 1} (data.ignore_index {ignore} is skipped):\n    "
                        + "\n    ".join(outside[:MAX_LISTED]))
    if problems:
        raise DataError("data.columns.mask: " + "\n".join(problems))
    return Scan(pixels, largest)


class MaskLabeling:
    """Semantic segmentation's labeling: a class per pixel, read from each row's mask."""

    stratify = False  # rows hold many classes: validation is carved plainly

    def _space(self, splits: dict[str, Dataset], recipe: Any, names: dict[str, str], complete: bool = True
               ) -> tuple[LabelSpace | None, dict[str, Scan]]:
        data = recipe.data
        classes = named_classes(data)
        scans = {"train": scan_masks(splits["train"], recipe, names["train"],
                                     len(classes) if classes is not None else None)}
        if classes is None and not complete:  # a sample of a Hub dataset: the largest id may lie beyond it
            for role, ds in splits.items():
                if role != "train":
                    scans[role] = scan_masks(ds, recipe, names[role], None)
            return None, scans
        if classes is None:
            if scans["train"].largest < 1:
                raise DataError(f"data.columns.mask: the masks of split '{names['train']}' hold "
                                f"{'only class 0' if scans['train'].largest == 0 else 'no scored pixel'}; "
                                "segmentation needs at least two classes")
            classes = [str(i) for i in range(scans["train"].largest + 1)]
        for role, ds in splits.items():
            if role != "train":
                scans[role] = scan_masks(ds, recipe, names[role], len(classes))
        return LabelSpace(tuple(classes), tuple(range(len(classes)))), scans

    def prepare(self, splits: dict[str, Dataset], recipe: Any, names: dict[str, str]
                ) -> tuple[dict[str, Dataset], LabelSpace, dict[str, Any]]:
        """(splits with each row's class pixels, the label space, notes for the run record)."""
        space, scans = self._space(splits, recipe, names)
        out = {role: _with_pixels(ds, scans[role].pixels, space.num_labels) for role, ds in splits.items()}
        return out, space, {"ignore_index": recipe.data.ignore_index}

    def prepare_eval(self, ds: Dataset, recipe: Any, split: str, model_labels: list[str]
                     ) -> tuple[Dataset, LabelSpace]:
        """New labelled masks checked against a finished model's classes (ids 0..K-1)."""
        space = LabelSpace(tuple(model_labels), tuple(range(len(model_labels))))
        scan = scan_masks(ds, recipe, split, space.num_labels)
        return _with_pixels(ds, scan.pixels, space.num_labels), space

    def preflight(self, splits: dict[str, Dataset], recipe: Any, names: dict[str, str], complete: bool
                  ) -> list[str] | None:
        """Every mask read and checked (size, class ids) before training; the class names."""
        from hf_finetune.data.images import prepare_image_column

        data = recipe.data
        ready = {role: prepare_file_column(prepare_image_column(ds, data.columns.image, names[role]),
                                           data.columns.mask, names[role], "data.columns.mask")
                 for role, ds in splits.items()}
        space = self._space(ready, recipe, names, complete)[0]
        return list(space.names) if space is not None else None

    def counts(self, train: Dataset, num_labels: int) -> Any:
        """Training pixels per class."""
        total = np.zeros(num_labels, dtype=np.int64)
        for row in train.with_format(None)[PIXELS_COLUMN]:
            total[: len(row)] += np.asarray(row, dtype=np.int64)[:num_labels]
        return total


def _with_pixels(ds: Dataset, pixels: list[list[int]], num_labels: int) -> Dataset:
    rows = [(list(p) + [0] * num_labels)[:num_labels] for p in pixels]
    if PIXELS_COLUMN in ds.column_names:
        ds = ds.remove_columns(PIXELS_COLUMN)
    return ds.add_column(PIXELS_COLUMN, rows)


# --- transforms ---------------------------------------------------------------------------------------------


def build_mask_transforms(size: tuple[int, int], mean: Any, std: Any, augment: bool) -> tuple[Any, Any]:
    """(train, eval) transforms of an (image, mask) pair: train crops a random share of the area
    (TRAIN_SCALE) resized to `size` and flips; eval resizes to `size` (nearest for the mask)."""
    import torch
    from torchvision.transforms import v2

    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    evaluation = v2.Compose([v2.Resize(size, antialias=True), *tail])
    if not augment:
        return evaluation, evaluation
    train = v2.Compose([v2.RandomResizedCrop(size, scale=TRAIN_SCALE, antialias=True),
                        v2.RandomHorizontalFlip(), *tail])
    return train, evaluation


class MaskTransform:
    """`Dataset.set_transform` callable: decode image and mask, move them together, ignored pixels -100."""

    def __init__(self, image_column: str, mask_column: str, transform: Any, ignore_index: int):
        self.image_column, self.mask_column = image_column, mask_column
        self.transform = transform
        self.ignore_index = ignore_index

    def pair(self, image: Any, mask: Any) -> tuple[Any, Any]:
        import torch
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        pixels = tv_tensors.Image(F.pil_to_tensor(decode_image(image)))
        ids = torch.from_numpy(read_mask(mask))
        ids = torch.where(ids == self.ignore_index, torch.tensor(IGNORED), ids)
        out_image, out_mask = self.transform(pixels, tv_tensors.Mask(ids))
        return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor).long()

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        pairs = [self.pair(i, m) for i, m in zip(batch[self.image_column], batch[self.mask_column], strict=True)]
        return {"pixel_values": [p[0] for p in pairs], LABEL_COLUMN: [p[1] for p in pairs]}


def collate_masks(features: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    batch = {"pixel_values": torch.stack([f["pixel_values"] for f in features])}
    if LABEL_COLUMN in features[0]:
        batch[LABEL_COLUMN] = torch.stack([f[LABEL_COLUMN] for f in features])
    return batch


@dataclass
class MaskEncoding:
    """Images and masks decoded and transformed together on the fly."""

    size: tuple[int, int]  # (height, width) trained and evaluated at
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = True

    def read(self, recipe: Any, ds: Dataset, split: str) -> Dataset:
        """Image and mask paths resolved and checked before any shuffling (a missing file named with its row)."""
        from hf_finetune.data.images import prepare_image_column

        cols = recipe.data.columns
        ds = prepare_image_column(ds, cols.image, split)
        return prepare_file_column(ds, cols.mask, split, "data.columns.mask")

    def prepare(self, recipe: Any, splits: dict[str, Dataset], names: dict[str, str]) -> Any:
        from hf_finetune.data.encodings import Encoded

        cols, ignore = recipe.data.columns, recipe.data.ignore_index
        train_tf, eval_tf = build_mask_transforms(self.size, self.mean, self.std, self.augment)
        out = {}
        for role, ds in splits.items():
            keep = [cols.image, cols.mask, PIXELS_COLUMN]
            ds = ds.remove_columns([c for c in ds.column_names if c not in keep])
            ds.set_transform(MaskTransform(cols.image, cols.mask, train_tf if role == "train" else eval_tf, ignore),
                             columns=[cols.image, cols.mask])
            out[role] = ds
        return Encoded(out, collate_masks)
