"""The Python face: hf_finetune.train / check / load_recipe take a path or a mapping and overrides."""

from __future__ import annotations

import json

import pytest

import hf_finetune
from hf_finetune.errors import DataError, RecipeError

from .conftest import write_recipe


def test_train_from_a_mapping_with_keyword_overrides(text_recipe, tmp_path):
    result = hf_finetune.train(text_recipe, training__num_train_epochs=1, **{"training.seed": 7})
    assert result.output_dir == tmp_path / "out"
    saved = json.loads((result.output_dir / "metrics.json").read_text())
    assert result.metrics["test"]["f1"] == saved["test"]["f1"]
    assert result.metrics["train"]["steps"] == 3  # 48 rows / batch 16, one epoch
    run = json.loads((result.output_dir / "run.json").read_text())
    assert run["training"]["seed"] == 7 and run["training"]["num_train_epochs"] == 1


def test_load_recipe_and_check_from_a_file(text_recipe, tmp_path):
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    recipe = hf_finetune.load_recipe(path, training__learning_rate=3e-5)
    assert recipe.training["learning_rate"] == 3e-5 and recipe.source == str(path)
    assert recipe.overrides == ("training.learning_rate=3e-05",)
    assert hf_finetune.check(path).task == "text-classification"


def test_the_same_errors_as_the_cli(text_recipe, tmp_path):
    with pytest.raises(RecipeError) as caught:
        hf_finetune.load_recipe(text_recipe, training__learnin_rate=1.0, model__nme="x")
    assert [str(p) for p in caught.value.problems] == [
        "override 'training.learnin_rate': training.learnin_rate: unknown TrainingArguments field; "
        "did you mean 'learning_rate'?",
        "override 'model.nme': model.nme: no such recipe key; did you mean 'name'?",
    ]
    with pytest.raises(RecipeError, match=r"training.num_train_epochs: must be above 0"):
        hf_finetune.check(text_recipe, data=False, training__num_train_epochs=0)
    text_recipe["data"]["columns"] = {"text": "review"}
    with pytest.raises(DataError, match="data.columns.text: column 'review' not found"):
        hf_finetune.check(text_recipe)
