"""The task layer: the registry, what each task says about itself, and capabilities refused by task."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

import hf_finetune
from hf_finetune import tasks
from hf_finetune.cli import main
from hf_finetune.errors import RecipeError, UserError

from .conftest import write_recipe

PACKAGE = Path(hf_finetune.__file__).parent


def without(monkeypatch, name: str, *capabilities: str) -> None:
    """The task `name` as if it did not serve `capabilities`."""
    task = tasks.TASKS[name]
    monkeypatch.setitem(tasks.TASKS, name, dataclasses.replace(task, capabilities=task.capabilities - set(capabilities)))


def test_every_recipe_task_has_a_module_and_back():
    from hf_finetune.recipe.schema import Recipe

    assert set(typing.get_args(Recipe.model_fields["task"].annotation)) == set(tasks.TASKS)
    for name, task in tasks.TASKS.items():
        assert task.name == name and task.pipeline_task and task.card_name and task.auto_model
        assert task.capabilities <= tasks.CAPABILITIES
        assert task.inputs.input_keys and task.inputs.kind


def test_unknown_task_is_a_recipe_error():
    with pytest.raises(RecipeError, match="task: unknown task 'token-tagging'; tasks: text-classification"):
        tasks.get_task("token-tagging")


def test_a_bare_model_folder_is_taken_for_the_task_that_reads_it():
    assert tasks.task_for_model({"architecture": "resnet18", "num_classes": 3}).name == "image-classification"
    assert tasks.task_for_model({"model_type": "bert"}).name == "text-classification"


def test_a_capability_the_task_does_not_serve_is_a_recipe_error_naming_both(monkeypatch, text_recipe):
    without(monkeypatch, "text-classification", "gradual_unfreeze", "layer_decay")
    text_recipe["finetune"] = {"strategy": "gradual_unfreeze", "layer_decay": 0.8}
    with pytest.raises(RecipeError) as caught:
        hf_finetune.check(text_recipe, data=False)
    message = str(caught.value)
    assert "finetune.strategy: task text-classification does not support gradual unfreeze" in message
    assert "finetune.layer_decay: task text-classification does not support layer decay" in message


def test_check_and_train_refuse_it_before_any_work(monkeypatch, tmp_path, text_recipe, capsys):
    without(monkeypatch, "text-classification", "linear_probe")
    text_recipe["finetune"] = {"strategy": "linear_probe"}
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    for command in (["check", str(path)], ["train", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "finetune.strategy: task text-classification does not support linear probe" in err
        assert "Traceback" not in err
    assert not (Path(text_recipe["output"]["dir"]) / "run.json").exists()


def test_a_served_capability_passes(text_recipe):
    text_recipe["finetune"] = {"strategy": "linear_probe"}
    assert hf_finetune.check(text_recipe, data=False).finetune.strategy == "linear_probe"


def test_commands_on_finished_runs_ask_the_runs_task(monkeypatch, text_run, tmp_path):
    from hf_finetune.combine.members import load_members

    without(monkeypatch, "text-classification", "soup", "export")
    import shutil

    other = shutil.copytree(text_run, tmp_path / "copy")
    with pytest.raises(UserError, match=r"RUN_DIR: .*: task text-classification does not support soup"):
        load_members([text_run, other], capability="soup")
    assert load_members([text_run, other], capability="ensemble")[0].run.task == "text-classification"
    with pytest.raises(UserError, match="task text-classification does not support export"):
        tasks.require("text-classification", "export", f"OUTPUT_DIR: {text_run}")


def _task_branches(tree: ast.AST) -> list[int]:
    """Lines that test the modality (`.is_text`, `.is_vision`) or compare against a task's name."""
    names = set(tasks.TASKS)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("is_text", "is_vision"):
            lines.append(node.lineno)
        elif isinstance(node, ast.Compare):
            values = [node.left, *node.comparators]
            if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                lines.append(node.lineno)
    return lines


def test_nothing_outside_the_task_layer_branches_on_the_task():
    """The pipeline and every command ask the task (hf_finetune/tasks) instead of testing which one it is.
    The recipe is pure data and says which keys each task reads."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("tasks/", "recipe/")):
            continue
        lines = _task_branches(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            found[rel] = lines
    assert not found


def test_the_branch_finder_finds_a_branch():
    assert _task_branches(ast.parse('if recipe.is_text or task == "image-classification":\n    pass')) == [1, 1]


def test_the_recipe_and_the_task_layer_agree_on_what_each_task_reads():
    from hf_finetune.recipe.schema import TASK_INPUTS

    assert {name: task.inputs.kind for name, task in tasks.TASKS.items()} == TASK_INPUTS


def test_a_resolved_recipe_keeps_only_its_inputs_keys(text_recipe, vision_recipe):
    text = hf_finetune.check(text_recipe, data=False).to_dict()
    vision = hf_finetune.check(vision_recipe, data=False).to_dict()
    assert "augmentation" not in text and "channels_last" not in text["model"] and "image" not in text["data"]["columns"]
    assert "preprocessing" not in vision and "attn_implementation" not in vision["model"]
    assert "attention_dropout" not in vision["model"]
    assert not {"text", "text_pair"} & set(vision["data"]["columns"]) and "image_folder" in vision["data"]


def test_attention_dropout_on_an_image_recipe_is_a_recipe_error(vision_recipe):
    recipe = dict(vision_recipe)
    recipe["model"] = {**recipe["model"], "attention_dropout": 0.1}
    with pytest.raises(RecipeError, match="model.attention_dropout: only applies to text models"):
        hf_finetune.check(recipe, data=False)
