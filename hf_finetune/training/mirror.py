"""Does mirroring an image change its class? Measured on the data before the flip default is kept.

Random horizontal flips are the house default (timm's too): right for photos of objects, wrong for
digits, letters, arrows or anything with a handedness, where a mirrored 2 is not a 2 (on digits
the flip alone costs 2 points of test accuracy: benchmarks/README.md). Nothing in an image folder
says which, and the backbone cannot either: it was pretrained with flips, so an image and its
mirror get nearly the same features (cosine 0.986 on digits with EfficientNet-Lite0).

What does tell is the class structure: a logistic-regression probe on the frozen backbone's
features, fitted on training images, scores the validation images and then the same images
mirrored. Flips are turned off (`augmentation.hflip` defaults to 0, with the figures as the
reason) when both hold:
    the mirrors lose at least `MIRROR_DROP` of accuracy (a small orientation bias of photos,
        which flips still help with, does not count), and
    the loss is no accident: of the images whose verdict changes, significantly more go from
        right to wrong than the other way (one-sided sign test, p < `MIRROR_P`).
Measured (benchmarks/README.md): digits with Lite0 lose 6.7 points (27 images right to wrong, 9
wrong to right, p = 0.002); the same digits with every image mirrored at random, a set whose
classes are mirror-invariant by construction, lose at most 2.6 points (p 0.16 to 0.95 over five
seeds: benchmarks/mirror_check.py). A recipe that sets hflip is never second-guessed. Cost: one
forward pass over a sample of each split and the mirrors, 12-18 s on digits on 2 CPU cores,
against about 290 s for the whole run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hf_finetune.training.data_aware import Decision
from hf_finetune.training.trainer import run_precision

logger = logging.getLogger(__name__)

MIRROR_SAMPLE = 400  # images of each split the check reads (a seeded sample)
MIRROR_DROP = 0.03  # accuracy the mirrored validation images must lose for flips to be turned off...
MIRROR_P = 0.01  # ...with a sign test this sure that the loss is not chance
MIN_PER_CLASS = 2  # training images per class the probe needs


@dataclass(frozen=True)
class MirrorTest:
    """A probe's verdicts on validation images and on their mirrors."""

    plain: float  # accuracy on the images
    mirrored: float  # accuracy on their mirrors
    lost: int  # images right as they are and wrong mirrored
    gained: int  # wrong as they are and right mirrored
    p_value: float  # one-sided sign test: more lost than gained by chance

    @property
    def changes_class(self) -> bool:
        return self.plain - self.mirrored >= MIRROR_DROP and self.p_value < MIRROR_P

    def describe(self, n: int) -> str:
        return (f"a probe on the frozen backbone's features scores {self.plain:.1%} on {n} validation images and "
                f"{self.mirrored:.1%} on the same images mirrored ({self.lost} go from right to wrong, "
                f"{self.gained} from wrong to right, sign test p = {self.p_value:.2g})")


def mirror_test(train: np.ndarray, train_labels: np.ndarray, validation: np.ndarray, mirrored: np.ndarray,
                labels: np.ndarray) -> MirrorTest:
    """Fits a logistic-regression probe on `train` and compares its verdicts on `validation` and `mirrored`."""
    from scipy.stats import binomtest
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(train), train_labels)
    right = probe.predict(scaler.transform(validation)) == labels
    right_mirrored = probe.predict(scaler.transform(mirrored)) == labels
    lost, gained = int((right & ~right_mirrored).sum()), int((~right & right_mirrored).sum())
    p = float(binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue) if lost + gained else 1.0
    return MirrorTest(float(right.mean()), float(right_mirrored.mean()), lost, gained, p)


def mirror_decision(recipe: Any, data: Any, model: Any, data_config: dict[str, Any] | None, args: Any
                    ) -> Decision | None:
    """`augmentation.hflip = 0` when mirrored validation images lose their class, else None (flips stay).

    Only for tasks whose data-aware defaults include `hflip` (images); `data_config`: the backbone's.
    """
    from hf_finetune.tasks import task_of

    aug = recipe.augmentation
    if ("hflip" not in task_of(recipe).inputs.defaults or aug.hflip == 0 or "hflip" in aug.model_fields_set
            or recipe.finetune.cache_features or "validation" not in data.splits
            or getattr(data, "streaming", False)  # a stream has no rows to pick at random
            # the probe compares classes: other label spaces (numbers) keep the recipe's flips as they are
            or getattr(data.labels, "problem_type", None) != "single_label_classification"):
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
    precision = run_precision(args)
    for role, ds in picked.items():
        feats[role], labels[role], mirrored = _features(model, classifier, ds, args, precision,
                                                        mirror=role == "validation")
        if mirrored is not None:
            feats["mirrored"] = mirrored
    train_labels = labels["train"]
    counts = np.bincount(train_labels)
    if len(counts[counts > 0]) < 2 or counts[counts > 0].min() < MIN_PER_CLASS:
        return None
    test = mirror_test(feats["train"], train_labels, feats["validation"], feats["mirrored"], labels["validation"])
    measured = test.describe(len(labels["validation"]))
    if not test.changes_class:
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
