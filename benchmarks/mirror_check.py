"""Does the mirror check behind the `augmentation.hflip` default tell mirror-sensitive classes apart?

    python benchmarks/mirror_check.py                  # digits and 5 mirror-invariant controls, about 1 min
    python benchmarks/mirror_check.py --controls 10

The check (hf_finetune/training/mirror.py) fits a logistic-regression probe on frozen
EfficientNet-Lite0 features of training images and compares its verdicts on validation images and
on their mirrors. Here it runs, with the tool's own `mirror_test`, on:
    digits     scikit-learn's digits as images: a mirrored 2 or 7 is not a 2 or 7
    control    the same digits with every image (train and validation) mirrored or not at random,
               a fixed coin per image: a set whose classes are mirror-invariant by construction,
               so the check must keep flips on; one row per seed
Printed per row: accuracy on the images and their mirrors, images lost / gained, the sign test's
p, and the decision. Results go to benchmarks/results/mirror_check.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import real_assets
from common import REPO, machine

RESULTS = REPO / "benchmarks" / "results" / "mirror_check.json"
SAMPLE = 400  # as the check itself (training/mirror.py MIRROR_SAMPLE)


def load_split(folder: Path, split: str, transform, seed: int) -> tuple[object, np.ndarray]:
    import torch
    from PIL import Image

    files = sorted(Path(folder, split).glob("*/*.png"))
    rng = np.random.default_rng(seed)
    rows = sorted(rng.choice(len(files), size=min(SAMPLE, len(files)), replace=False).tolist())
    files = [files[i] for i in rows]
    pixels = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    return pixels, np.array([int(f.parent.name) for f in files])


def features(model, pixels):
    import torch

    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, len(pixels), 32):
            batch = pixels[start:start + 32]
            out.append(model.timm_model.forward_head(model.timm_model.forward_features(batch), pre_logits=True).float())
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--controls", type=int, default=5, help="seeds of the mirror-invariant control")
    args = parser.parse_args()
    from transformers import TimmWrapperForImageClassification

    from hf_finetune.data.vision import build_eval_transform
    from hf_finetune.models.backbones import vision_data_config
    from hf_finetune.training.mirror import MIRROR_DROP, MIRROR_P, mirror_test

    folder = real_assets.digits_folder()
    model = TimmWrapperForImageClassification.from_pretrained(real_assets.efficientnet_lite_dir(0)).eval()
    transform = build_eval_transform(vision_data_config(model.config))
    started = time.perf_counter()
    (train_px, train_y), (val_px, val_y) = (load_split(folder, s, transform, 0) for s in ("train", "validation"))
    train_f, val_f, val_m = features(model, train_px), features(model, val_px), features(model, val_px.flip(-1))
    check_s = time.perf_counter() - started  # what the check costs a run: decoding and three forward passes
    train_m = features(model, train_px.flip(-1))  # for the controls only

    rows = []

    def report(name: str, test) -> None:
        rows.append({"set": name, "plain": test.plain, "mirrored": test.mirrored, "lost": test.lost,
                     "gained": test.gained, "p": test.p_value, "flips_off": test.changes_class})
        print(f"{name:10s} acc {test.plain:.3f} mirrored {test.mirrored:.3f} | lost {test.lost:3d} gained "
              f"{test.gained:3d} | p {test.p_value:.3g} | flips {'OFF' if test.changes_class else 'kept'}")

    report("digits", mirror_test(train_f, train_y, val_f, val_m, val_y))
    for seed in range(args.controls):
        rng = np.random.default_rng(100 + seed)
        coin_t, coin_v = rng.random(len(train_f)) < 0.5, rng.random(len(val_f)) < 0.5
        train_c = np.where(coin_t[:, None], train_m, train_f)
        shown, other = np.where(coin_v[:, None], val_m, val_f), np.where(coin_v[:, None], val_f, val_m)
        report(f"control {seed}", mirror_test(train_c, train_y, shown, other, val_y))
    print(f"rule: flips off at a loss of {MIRROR_DROP:.0%} or more with p < {MIRROR_P}; the check's features "
          f"took {check_s:.1f} s ({len(train_f)} training + {len(val_f)} validation images and their mirrors)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                   "check_seconds": check_s, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
