"""Does mirroring an image change its class? Measured on the data before the flip default is kept.

Random horizontal flips are the house default (timm's too): right for photos of objects, wrong for
digits, letters, arrows or anything with a handedness, where a mirrored 2 is not a 2 (on digits
the flip alone costs 2 points of test accuracy: benchmarks/README.md). Nothing in an image folder
says which, and the backbone cannot either: it was pretrained with flips, so an image and its
mirror get nearly the same features (cosine 0.986 on digits with EfficientNet-Lite0).

What does tell is the class structure: a nearest-centroid classifier on the frozen backbone's
features, fitted on training images, scores the validation images and then the same images
mirrored. When the mirrors lose at least `MIRROR_DROP` of accuracy, mirroring changes what the
images show, and `augmentation.hflip` defaults to 0 with that reason; a recipe that sets hflip
is never second-guessed. One forward pass over a sample of each split (seconds next to training).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from hf_finetune.training.data_aware import Decision

logger = logging.getLogger(__name__)

MIRROR_SAMPLE = 400  # images of each split the check reads (a seeded sample)
MIRROR_DROP = 0.10  # accuracy the mirrored validation images must lose for flips to be turned off
MIN_PER_CLASS = 2  # training images per class the centroids need


def centroid_accuracies(train: np.ndarray, train_labels: np.ndarray, validation: np.ndarray,
                        mirrored: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy on `validation`, on `mirrored`) of the nearest class centroid by cosine, fitted on `train`."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    classes = np.unique(train_labels)
    centroids = unit(np.stack([unit(train)[train_labels == c].mean(axis=0) for c in classes]))
    scores = [float((classes[np.argmax(unit(x) @ centroids.T, axis=1)] == labels).mean())
              for x in (validation, mirrored)]
    return scores[0], scores[1]


def mirror_decision(recipe: Any, data: Any, model: Any, data_config: dict[str, Any], args: Any) -> Decision | None:
    """`augmentation.hflip = 0` when mirrored validation images lose their class, else None (flips stay)."""
    aug = recipe.augmentation
    if (not recipe.is_vision or aug.hflip == 0 or "hflip" in aug.model_fields_set or recipe.finetune.cache_features
            or "validation" not in data.splits):
        return None
    from hf_finetune.data.vision import ImageTransform, build_eval_transform
    from hf_finetune.models.features import find_classifier

    column = recipe.data.columns.image
    transform = ImageTransform(column, build_eval_transform(data_config))
    rng = np.random.default_rng(recipe.data.seed)
    picked = {}
    for role in ("train", "validation"):
        ds = data.splits[role]
        rows = np.sort(rng.choice(len(ds), size=min(MIRROR_SAMPLE, len(ds)), replace=False)).tolist()
        picked[role] = ds.select(rows).with_transform(transform)
    feats, labels = {}, {}
    classifier = find_classifier(model)
    precision = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    for role, ds in picked.items():
        feats[role], labels[role], mirrored = _features(model, classifier, ds, args, precision,
                                                        mirror=role == "validation")
        if mirrored is not None:
            feats["mirrored"] = mirrored
    train_labels = labels["train"]
    if np.bincount(train_labels).max(initial=0) < MIN_PER_CLASS:
        return None
    plain, flipped = centroid_accuracies(feats["train"], train_labels, feats["validation"], feats["mirrored"],
                                         labels["validation"])
    n = len(labels["validation"])
    measured = (f"a nearest-centroid probe on the frozen backbone's features scores {plain:.0%} on {n} validation "
                f"images and {flipped:.0%} on the same images mirrored")
    if plain - flipped < MIRROR_DROP:
        logger.info("Mirror check: %s; mirroring keeps the class, so random flips stay on (hflip %g)",
                    measured, aug.hflip)
        return None
    return Decision("augmentation.hflip", 0.0,
                    f"{measured}: mirroring changes what these images show, so training does not flip them")


@torch.no_grad()
def _features(model: Any, classifier: Any, ds: Any, args: Any, precision: torch.dtype | None,
              mirror: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(features, labels, features of the mirrored images or None) of every row of `ds`."""
    from hf_finetune.data.labels import LABEL_COLUMN
    from hf_finetune.data.vision import PIXELS

    captured: list[torch.Tensor] = []
    handle = classifier.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0].float().cpu()))
    was_training = model.training
    model.eval().to(args.device)
    plain, flipped, labels = [], [], []
    batch_size = args.per_device_eval_batch_size
    try:
        for start in range(0, len(ds), batch_size):
            rows = ds[start:start + batch_size]
            pixels = torch.stack(rows[PIXELS]).to(args.device)
            labels += list(rows[LABEL_COLUMN])
            for images, out in [(pixels, plain)] + ([(pixels.flip(-1), flipped)] if mirror else []):
                with torch.autocast(args.device.type, dtype=precision or torch.bfloat16, enabled=precision is not None):
                    model(pixel_values=images)
                out.append(captured.pop())
    finally:
        handle.remove()
        model.train(was_training)
    features = torch.cat(plain).flatten(1).numpy()
    return features, np.asarray(labels), torch.cat(flipped).flatten(1).numpy() if mirror else None
