"""Every value is checked before any heavy work, with its key path: ranges, bools for numbers, NaN."""

from __future__ import annotations

import pytest

from hf_finetune.cli import main
from hf_finetune.errors import RecipeError
from hf_finetune.recipe import validate_recipe

from .conftest import write_recipe


def _problems(training=None, **sections) -> dict[str, str]:
    raw = {"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"},
           "training": training or {}, **sections}
    with pytest.raises(RecipeError) as caught:
        validate_recipe(raw)
    return {p.path: p.message for p in caught.value.problems}


@pytest.mark.parametrize(("key", "value", "message"), [
    ("per_device_train_batch_size", 0, "must be in [1, 65536], got 0"),
    ("per_device_eval_batch_size", -4, "must be in [1, 65536], got -4"),
    ("gradient_accumulation_steps", 0, "must be at least 1, got 0"),
    ("num_train_epochs", 0, "must be above 0 (a run of 0 epochs would publish an untrained model) and at most "
                            "10000 (a longer run is a mistake; training.max_steps counts steps), got 0.0"),
    ("num_train_epochs", -1, "must be above 0"),
    ("num_train_epochs", 1e30, "must be above 0 (a run of 0 epochs would publish an untrained model) and at most "
                               "10000 (a longer run is a mistake; training.max_steps counts steps), got 1e+30"),
    ("max_steps", 0, "must be -1 (train for num_train_epochs) or at least 1, got 0"),
    ("learning_rate", float("nan"), "must be a finite number, got nan"),
    ("learning_rate", float("inf"), "must be a finite number, got inf"),
    ("learning_rate", -1e-5, "must be above 0, got -1e-05"),
    ("seed", -1, "must be in [0, 4294967295], got -1"),
    ("seed", 2**40, "must be in [0, 4294967295]"),
    ("dataloader_num_workers", -1, "must be 0 or more, got -1"),
    ("logging_steps", 0, "must be above 0: a share below 1, or whole steps, got 0.0"),
    ("save_steps", 2.5, "a share below 1, or whole steps, got 2.5"),
    ("eval_steps", -3, "must be above 0"),
    ("save_total_limit", 0, "must be at least 1 (or null to keep every checkpoint), got 0"),
    ("max_grad_norm", -1.0, "must be 0 or more (0 turns clipping off), got -1.0"),
    ("lr_scheduler_kwargs", [1, 2], "expected"),
    ("lr_scheduler_kwargs", "power", "must be a mapping of keyword arguments"),
    ("num_train_epochs", True, "expected a number, got True (bool)"),
    ("per_device_train_batch_size", False, "expected a number, got False (bool)"),
    ("warmup_steps", -0.1, "must be 0 or more"),
    ("label_smoothing_factor", 1.0, "must be in [0, 1), got 1.0"),
])
def test_training_values_out_of_range_name_their_key(key, value, message):
    assert message in _problems({key: value})[f"training.{key}"]


def test_a_mapping_of_scheduler_arguments_and_valid_edges_pass():
    recipe = validate_recipe({"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"},
                              "training": {"lr_scheduler_kwargs": {"power": 2.0}, "max_steps": 1, "seed": 0,
                                           "max_grad_norm": 0, "warmup_steps": 0.1, "logging_steps": 5}})
    assert recipe.training["lr_scheduler_kwargs"] == {"power": 2.0} and recipe.training["max_steps"] == 1


@pytest.mark.parametrize(("path", "section", "message"), [
    ("data.seed", {"data": {"dataset": "d", "seed": True}}, "expected a number, got True (bool)"),
    ("data.seed", {"data": {"dataset": "d", "seed": -5}}, "greater than or equal to 0"),
    ("data.validation_size", {"data": {"dataset": "d", "validation_size": float("nan")}}, "finite number"),
    ("batch.global_size", {"batch": {"global_size": True}}, "expected a number, got True (bool)"),
    ("finetune.early_stopping_patience", {"finetune": {"early_stopping_patience": True}}, "got True (bool)"),
    ("finetune.head_learning_rate", {"finetune": {"head_learning_rate": float("inf")}}, "finite number"),
    ("data.max_samples.train", {"data": {"dataset": "d", "max_samples": {"train": 0}}}, "greater than 0"),
])
def test_section_values_out_of_range_name_their_key(path, section, message):
    assert message in _problems(**section)[path]


def test_all_mistakes_are_reported_at_once_before_any_work(tmp_path, text_recipe, capsys):
    text_recipe["training"].update(num_train_epochs=0, learning_rate=float("nan"), seed=-1)
    text_recipe["data"]["seed"] = True
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    for command in ("check", "train"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert "invalid recipe, 4 problems" in err and "Traceback" not in err
        for key in ("training.num_train_epochs", "training.learning_rate", "training.seed", "data.seed"):
            assert key in err
    assert not (tmp_path / "out").exists()


def test_check_reports_what_training_arguments_refuse(tmp_path, text_recipe, capsys):
    text_recipe["training"].update(lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="no",
                                   save_strategy="no", load_best_model_at_end=False)
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    assert main(["check", str(path), "--schema-only"]) == 2
    err = capsys.readouterr().err
    assert "training: lr_scheduler_type reduce_lr_on_plateau requires an eval strategy" in err
    assert "Traceback" not in err


def test_a_bare_yaml_no_for_a_strategy_gets_a_hint(tmp_path, text_recipe, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(write_recipe(tmp_path / "base.yaml", text_recipe).read_text() + "\n")
    assert main(["check", str(path), "--schema-only", "training.eval_strategy=no"]) == 2
    assert 'YAML reads a bare no/yes as a boolean: write "no" in quotes' in capsys.readouterr().err


@pytest.mark.parametrize(("override", "message"), [
    ("training.lr_scheduler_kwargs.foo=1", "training.lr_scheduler_kwargs.foo: not an argument of the linear scheduler"),
    ("training.log_level_replica=spawn", "training.log_level_replica: 'spawn' is not a log level"),
    ("training.optim=adamw_bnb_8bit", "training.optim: adamw_bnb_8bit cannot be used here"),
    ("training.use_liger_kernel=true", "training.use_liger_kernel: needs the liger-kernel package"),
    ("training.debug=underflow_overflow", "training.debug: underflow_overflow is not supported"),
    ("training.per_device_eval_batch_size=10000000000000", "must be in [1, 65536]"),
    ("training.num_train_epochs=1e30", "training.num_train_epochs: must be above 0"),
    ("training.deepspeed=ds.json", "training.deepspeed: needs the deepspeed package"),
])
def test_what_would_fail_after_loading_is_refused_by_check(tmp_path, text_recipe, capsys, override, message):
    # Each of these used to pass validation and end in a traceback once data and model were loaded
    # (found by benchmarks/fuzz_recipes.py).
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    for command in ("check", "train"):
        assert main([command, str(path), override]) == 2
        err = capsys.readouterr().err
        assert message in err and f"{path}: invalid recipe" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "run.json").exists()
