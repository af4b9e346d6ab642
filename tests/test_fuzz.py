"""Hundreds of randomly corrupted recipes: each is valid or gets errors naming keys, never a traceback."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from hf_finetune.errors import RecipeError
from hf_finetune.recipe import apply_overrides, validate_recipe

JUNK: list[Any] = [None, 0, -1, 3, 1.5, -2.5, 1e300, 10**30, float("nan"), float("inf"), True, False, "", "x" * 300,
                   "1e-5", "ünïcödé ✓", "../../etc/passwd", "null", [], [1, "a"], [[]], {}, {"a": 1}, {"": None},
                   {1: 2}, "epoch", "auto", b"bytes"]


def base_recipe(tmp_path, task: str) -> dict:
    train = tmp_path / "train.csv"
    train.write_text("text,label\na,x\nb,y\n")
    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True, exist_ok=True)
    data = {"files": {"train": str(train), "test": str(train)}, "columns": {"text": "text", "label": "label"},
            "max_samples": {"train": 10}, "validation_size": 0.2, "seed": 1} if task == "text-classification" \
        else {"image_folder": str(tmp_path / "images"), "columns": {"image": "image"}, "bad_images": "skip"}
    recipe = {
        "task": task,
        "model": {"name": "some/model", "revision": "main", "trust_remote_code": False},
        "data": data,
        "metrics": ["accuracy", "f1"],
        "training": {"learning_rate": 2e-5, "num_train_epochs": 2, "eval_strategy": "epoch",
                     "lr_scheduler_type": "cosine", "metric_for_best_model": "f1", "warmup_steps": 0.1},
        "output": {"dir": str(tmp_path / "out")},
    }
    if task == "text-classification":
        recipe["preprocessing"] = {"max_length": 128}
    else:
        recipe["augmentation"] = {"crop_scale": [0.5, 1.0], "hflip": 0.5}
    return recipe


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append(prefix + (key,))
            out += paths(value, prefix + (key,))
    return out


def parent_of(recipe: dict, path: tuple) -> dict:
    node = recipe
    for key in path[:-1]:
        node = node[key]
    return node


def mutate(recipe: dict, rng: random.Random) -> dict:
    recipe = copy.deepcopy(recipe)
    for _ in range(rng.randint(1, 3)):
        candidates = paths(recipe)
        if not candidates:
            break
        path = rng.choice(candidates)
        try:
            parent = parent_of(recipe, path)
        except (KeyError, TypeError):
            continue
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue
        kind = rng.choice(["delete", "junk", "junk", "typo", "extra", "swap"])
        key = path[-1]
        if kind == "delete":
            del parent[key]
        elif kind == "junk":
            parent[key] = copy.deepcopy(rng.choice(JUNK))
        elif kind == "typo" and isinstance(key, str) and len(key) > 2:
            i = rng.randrange(len(key))
            parent[key[:i] + key[i + 1:]] = parent.pop(key)
        elif kind == "extra":
            parent[rng.choice(["extra", "lr", "epochs", "Name", 7])] = rng.choice(JUNK)
        else:
            other = rng.choice(candidates)
            try:
                parent[key] = copy.deepcopy(parent_of(recipe, other)[other[-1]])
            except (KeyError, TypeError):
                pass
    return recipe


@pytest.mark.parametrize("task", ["text-classification", "image-classification"])
def test_corrupted_recipes_get_key_named_errors(tmp_path, task):
    base = base_recipe(tmp_path, task)
    validate_recipe(copy.deepcopy(base))  # the starting point is valid
    errors = 0
    for seed in range(300):
        corrupted = mutate(base, random.Random(f"{task}-{seed}"))
        try:
            validate_recipe(corrupted, "fuzz.yaml")
        except RecipeError as exc:
            errors += 1
            assert exc.problems, corrupted
            for problem in exc.problems:
                assert problem.path and problem.message, (problem, corrupted)
            assert str(exc).startswith("fuzz.yaml: invalid recipe")
    assert errors > 200  # the corruptions bite


def test_random_overrides_are_applied_or_rejected_cleanly(tmp_path):
    base = base_recipe(tmp_path, "text-classification")
    keys = ["training.learning_rate", "training.lr", "model.name", "model", "data.files.train", "data.splits.test",
            "metrics", "metrics.0", "output.dir.x", "task", "training.eval_strategy", "", ".", "a..b", "data.seed"]
    values = ["3e-5", "[1, 2]", "{a: 1}", "null", "", "'quoted'", ": bad: yaml: [", "-1", "true", "épée"]
    rng = random.Random(0)
    for _ in range(300):
        overrides = [f"{rng.choice(keys)}={rng.choice(values)}" for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.1:
            overrides.append(rng.choice(["noequals", "=value", "training"]))
        try:
            validate_recipe(apply_overrides(base, overrides), "fuzz.yaml")
        except RecipeError as exc:
            assert exc.problems and all(str(p) for p in exc.problems)
