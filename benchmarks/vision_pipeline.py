"""Vision input pipeline on CPU: decode + augment throughput, and the share of step time spent waiting.

    python benchmarks/vision_pipeline.py [--images 448] [--model resnet18]

Data: an image folder of JPEG photos-sized images (400x300). Model: a small timm network (random
weights) at its own input size. Both sides run hf-finetune's data stage and training loop; they
differ in the loader workers:

  baseline  no worker processes (what transformers' example scripts default to)
  ours      `--workers` loader workers (default: what hf-finetune picks for the machine: with a GPU
            cores - 1, on CPU alone a quarter of the cores, so none on a 2-core machine)

Prints decoding + augmentation images/s (the loader alone), and during training the share of each
optimizer step spent waiting for the next batch (target on CPU: under 10%), plus samples/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import StepTimer, add_callback_to_every_trainer, report, write_photos

WORK = Path(tempfile.mkdtemp(prefix="bench-vision-"))


def recipe_for(folder: Path, model: str, workers: int | None, out: str) -> dict:
    training = {"num_train_epochs": 1, "per_device_train_batch_size": 32, "per_device_eval_batch_size": 64,
                "learning_rate": 1e-3, "eval_strategy": "no", "save_strategy": "no",
                "load_best_model_at_end": False, "logging_steps": 100}
    if workers is not None:
        training["dataloader_num_workers"] = workers
    return {"task": "image-classification", "model": {"name": model, "pretrained": False},
            "data": {"image_folder": str(folder), "splits": {"test": None}}, "metrics": ["accuracy"],
            "training": training, "output": {"dir": str(WORK / out), "overwrite": True}}


def loader_images_per_second(recipe: dict) -> tuple[float, int]:
    import torch

    from hf_finetune.data import build_datasets
    from hf_finetune.models.backbones import load_vision_config, vision_data_config
    from hf_finetune.recipe import validate_recipe
    from hf_finetune.training.arguments import device_defaults

    checked = validate_recipe(recipe)
    workers = checked.training.get("dataloader_num_workers",
                                   device_defaults(checked.task).get("dataloader_num_workers", 0))
    data = build_datasets(checked, data_config=vision_data_config(load_vision_config(checked.model)),
                          augment=checked.augmentation.timm_kwargs())
    loader = torch.utils.data.DataLoader(data.splits["train"], batch_size=32, num_workers=workers,
                                         collate_fn=data.collator, shuffle=True)
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch["labels"])
    return seen / (time.perf_counter() - start), workers


def train_with_timer(recipe: dict) -> tuple[float, float]:
    from hf_finetune.pipeline import run
    from hf_finetune.recipe import validate_recipe

    timer = StepTimer()
    add_callback_to_every_trainer(timer)
    result = run(validate_recipe(recipe))
    per_step = timer.seconds_per_step()
    return timer.wait_share(), recipe["training"]["per_device_train_batch_size"] / per_step if per_step else \
        result.metrics["train"]["samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=448, help="training images (split over 3 classes)")
    parser.add_argument("--model", default="resnet18", help="a timm architecture (random weights)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers for 'ours' (default: the machine's)")
    args = parser.parse_args()
    per_class = args.images // 3
    folder = write_photos(WORK / "photos", {"train": per_class, "validation": max(8, per_class // 8)},
                          size=(400, 300))
    ours_recipe = recipe_for(folder, args.model, args.workers, "ours")
    base_recipe = recipe_for(folder, args.model, 0, "baseline")
    ours_rate, workers = loader_images_per_second(ours_recipe)
    base_rate, _ = loader_images_per_second(base_recipe)
    ours_wait, ours_speed = train_with_timer(ours_recipe)
    base_wait, base_speed = train_with_timer(base_recipe)
    report(f"vision_pipeline_workers{workers}", [
        ("decode + augment images/s (loader alone)", ours_rate, base_rate),
        ("share of step time waiting for data", ours_wait, base_wait),
        ("training samples/s (steady state)", ours_speed, base_speed),
    ], extra={"workers (ours / baseline)": f"{workers} / 0", "model": args.model,
              "images": f"{args.images} JPEG 400x300, batch 32"})


if __name__ == "__main__":
    main()
