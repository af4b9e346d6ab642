"""Vision preprocessing: timm transforms driven by the backbone's pretrained data config, on the fly."""

from __future__ import annotations

from typing import Any

import torch

from hf_finetune.data.images import decode_image
from hf_finetune.data.labels import LABEL_COLUMN

PIXELS = "pixel_values"


def build_image_transforms(data_config: dict[str, Any], augment: dict[str, Any] | None) -> tuple[Any, Any]:
    """(train, eval) transforms from the model's data config: never a hand-typed size, mean or std.

    Train: random resized crop to the input size, flips and the recipe's augmentation; with
    `augment=None`, training images get the evaluation transform (no randomness).
    Eval: resize + center crop by the model's crop ratio, exactly as `pipeline()` will preprocess.
    """
    import timm.data

    evaluation = build_eval_transform(data_config)
    if augment is None:
        return evaluation, evaluation
    train = timm.data.create_transform(**data_config, is_training=True, **augment)
    return train, evaluation


def build_eval_transform(data_config: dict[str, Any]) -> Any:
    """Resize + center crop + normalize by the model's data config, as `pipeline()` does."""
    import timm.data

    return timm.data.create_transform(**data_config, is_training=False)


class ImageTransform:
    """`Dataset.set_transform` callable: decode each image cell, convert to RGB, apply `transform`."""

    def __init__(self, column: str, transform: Any):
        self.column = column
        self.transform = transform

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = {PIXELS: [self.transform(decode_image(value)) for value in batch[self.column]]}
        if LABEL_COLUMN in batch:
            out[LABEL_COLUMN] = batch[LABEL_COLUMN]
        return out


class ImageCollator:
    """Stacks images and labels; in channels-last layout when the model runs in it (CNNs on GPU)."""

    def __init__(self, channels_last: bool = False):
        self.channels_last = channels_last

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([f[PIXELS] for f in features])
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        batch = {PIXELS: pixels}
        if LABEL_COLUMN in features[0]:
            labels = [f[LABEL_COLUMN] for f in features]
            # class ids; a 0/1 row per label (label sets) stays float for BCE
            batch[LABEL_COLUMN] = torch.tensor(labels, dtype=torch.float32 if isinstance(labels[0], list) else torch.long)
        return batch


collate_images = ImageCollator()
