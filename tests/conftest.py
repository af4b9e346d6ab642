"""Shared fixtures: tiny models written to disk, small datasets, recipe files. Everything offline."""

from __future__ import annotations

from .helpers.isolation import isolate_hub, write_csv

# Before any Hugging Face import: no test can reach (or wait for) the network or touch the machine's cache.
_CACHE = isolate_hub("hf-finetune-tests-")

import os  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs the suite in one process per core (pyproject's addopts): one thread each for torch,
    # as torchrun gives its ranks, not every process a thread per core fighting over the same cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import random  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject's addopts): a test process per core the suite may use, at most 8 (each builds its
    own tiny models, and more only add start-up); PYTEST_XDIST_AUTO_NUM_WORKERS, as xdist reads it, wins."""
    asked = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if asked:
        return int(asked)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))

POSITIVE = ["good", "great", "wonderful", "superb", "moving"]
NEGATIVE = ["bad", "awful", "boring", "dull", "terrible"]
FILLER = ["the", "movie", "film", "was", "really", "quite", "plot", "acting", "and"]


def review_rows(n: int, seed: int, labels: tuple[str, ...] = ("neg", "pos")) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = POSITIVE if label == "pos" else NEGATIVE if label == "neg" else FILLER
        text = f"the {rng.choice(['movie', 'film', 'plot'])} was {rng.choice(['really', 'quite', ''])} {rng.choice(words)}"
        rows.append({"text": " ".join(text.split()), "label": label})
    return rows


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture
def no_retry_waits(monkeypatch):
    """Fails the test if anything sleeps: network retry loops wait between attempts (tens of seconds in all),
    so a command that must fail fast when the Hub is unreachable is checked without timing it."""
    import time

    def sleep(seconds):
        raise AssertionError(f"slept {seconds}s: a retry loop instead of failing fast")

    monkeypatch.setattr(time, "sleep", sleep)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A BERT encoder with hidden size 32, 2 layers, 4 heads, and a tokenizer over the review words."""
    from hf_finetune.testing import write_tiny_bert

    return write_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert", POSITIVE + NEGATIVE + FILLER)


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory) -> Path:
    from hf_finetune.testing import write_tiny_timm

    return write_tiny_timm(tmp_path_factory.mktemp("models") / "tiny-resnet", "test_resnet",
                           pretrained_cfg={"input_size": [3, 32, 32], "crop_pct": 1.0})


@pytest.fixture
def reviews(tmp_path) -> dict[str, Path]:
    """Small train/validation/test csv files with string labels neg/pos."""
    return {
        "train": write_csv(tmp_path / "data" / "train.csv", review_rows(48, seed=0)),
        "validation": write_csv(tmp_path / "data" / "validation.csv", review_rows(16, seed=1)),
        "test": write_csv(tmp_path / "data" / "test.csv", review_rows(16, seed=2)),
    }


@pytest.fixture
def text_recipe(tmp_path, tiny_bert, reviews) -> dict[str, Any]:
    """A complete text recipe (as a dict) that trains the tiny BERT for a few steps."""
    return {
        "task": "text-classification",
        "model": {"name": str(tiny_bert)},
        "data": {
            "files": {k: str(v) for k, v in reviews.items()},
            "cache_dir": str(tmp_path / "cache"),
        },
        "training": {
            "num_train_epochs": 2,
            "per_device_train_batch_size": 16,
            "per_device_eval_batch_size": 16,
            "learning_rate": 1.0e-3,
            "logging_steps": 1,
        },
        "output": {"dir": str(tmp_path / "out")},
    }


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    from hf_finetune.testing import write_tiny_timm

    return write_tiny_timm(tmp_path_factory.mktemp("models") / "tiny-vit", "test_vit", model_args={"img_size": 32},
                           pretrained_cfg={"input_size": [3, 32, 32], "crop_pct": 1.0})


@pytest.fixture
def pattern_folder(tmp_path) -> Path:
    """An image folder with train/validation/test sub-folders, 3 classes, 32 px PNGs."""
    from hf_finetune.testing import write_pattern_folder

    return write_pattern_folder(tmp_path / "patterns", {"train": 8, "validation": 3, "test": 3}, size=32,
                                odd_modes=True)


@pytest.fixture
def vision_recipe(tmp_path, tiny_resnet, pattern_folder) -> dict[str, Any]:
    """A complete vision recipe (as a dict) that trains the tiny ResNet for a few steps."""
    return {
        "task": "image-classification",
        "model": {"name": str(tiny_resnet)},
        "data": {"image_folder": str(pattern_folder)},
        "training": {
            "num_train_epochs": 1,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 8,
            "learning_rate": 1.0e-3,
            "logging_steps": 1,
        },
        "output": {"dir": str(tmp_path / "out")},
    }


def _train(tmp_path_factory, name: str, recipe: dict[str, Any]) -> Path:
    from hf_finetune.cli import main

    folder = tmp_path_factory.mktemp(name)
    recipe["output"] = {"dir": str(folder / "out")}
    assert main(["train", str(write_recipe(folder / "recipe.yaml", recipe))]) == 0
    return folder / "out"


@pytest.fixture(scope="session")
def text_run(tmp_path_factory, tiny_bert) -> Path:
    """A finished text run (tiny BERT, reviews neg/pos, 16 validation and 16 test rows), shared by
    several tests: copy it (shutil.copytree) before changing anything in it."""
    data = tmp_path_factory.mktemp("text-run-data")
    files = {split: str(write_csv(data / f"{split}.csv", review_rows(n, seed=seed)))
             for split, n, seed in (("train", 48, 0), ("validation", 16, 1), ("test", 16, 2))}
    return _train(tmp_path_factory, "text-run", {
        "task": "text-classification",
        "model": {"name": str(tiny_bert)},
        "data": {"files": files, "cache_dir": str(data / "cache")},
        # Enough steps (48) for the tiny model to learn the reviews, so predictions differ between inputs;
        # evaluated every epoch (for the plots) but never checkpointed, which would cost time for nothing here.
        # fp32: the same figures on every CPU (bf16 is the default only where the CPU has AMX).
        "training": {"num_train_epochs": 8, "per_device_train_batch_size": 8, "learning_rate": 3.0e-3,
                     "logging_steps": 1, "save_strategy": "no", "load_best_model_at_end": False, "bf16": False},
    })


@pytest.fixture(scope="session")
def vision_run(tmp_path_factory, tiny_resnet) -> Path:
    """A finished vision run (tiny ResNet, 3 patterns, 3 images per class in validation and test),
    shared by several tests: copy it before changing anything in it."""
    from hf_finetune.testing import write_pattern_folder

    folder = write_pattern_folder(tmp_path_factory.mktemp("vision-run-data") / "patterns",
                                  {"train": 8, "validation": 3, "test": 3}, size=32, odd_modes=True)
    return _train(tmp_path_factory, "vision-run", {
        "task": "image-classification",
        "model": {"name": str(tiny_resnet)},
        "data": {"image_folder": str(folder)},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 1.0e-3,
                     "logging_steps": 1},
    })
