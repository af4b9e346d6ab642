"""Several processes: real 2-process runs on CPU through accelerate, batch arithmetic, configs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_finetune.cli import main
from hf_finetune.errors import RecipeError
from hf_finetune.recipe import validate_recipe
from hf_finetune.training.arguments import resolve_training
from hf_finetune.training.distributed import block_classes

from .conftest import FILLER, NEGATIVE, POSITIVE, REPO, review_rows, write_csv, write_recipe
from .helpers.launch import two_process_launch

CONFIGS = sorted((REPO / "accelerate_configs").glob("*.yaml"))
# Two processes sum the same per-sample gradients in another order: float32 rounding differs.
ATOL, RTOL = 1e-5, 1e-4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_accelerate_config_loads_and_names_its_command(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 1
    head = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(f"accelerate launch --config_file accelerate_configs/{path.name}" in line for line in head)


def _recipe(**batch):
    raw = {"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"}, "batch": batch,
           "training": {"per_device_train_batch_size": 16}}
    return validate_recipe(raw)


def _split(recipe, processes):
    return resolve_training(recipe, processes).batch.record()


def test_global_batch_is_split_over_processes():
    recipe = _recipe(global_size=64)
    resolved = resolve_training(recipe, 2)
    assert resolved.batch.record() == {"global": 64, "processes": 2, "per_device": 16, "accumulation_steps": 2}
    assert resolved.training["per_device_train_batch_size"] == 16
    assert resolved.training["gradient_accumulation_steps"] == 2
    assert "gradient_accumulation_steps" not in recipe.training  # the recipe is not a scratchpad
    assert _split(_recipe(global_size=64), 8) == {"global": 64, "processes": 8, "per_device": 8,
                                                  "accumulation_steps": 1}
    assert _split(_recipe(global_size=48, max_per_device=20), 1)["per_device"] == 16  # 48 = 3 x 16
    with pytest.raises(RecipeError, match="batch.global_size: 64 samples do not divide evenly over 3 processes"):
        _split(_recipe(global_size=64), 3)
    as_given = _recipe()
    assert _split(as_given, 4) == {"global": 64, "processes": 4, "per_device": 16, "accumulation_steps": 1}
    with pytest.raises(RecipeError, match="derived from batch.global_size"):
        validate_recipe({"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"},
                         "batch": {"global_size": 8}, "training": {"gradient_accumulation_steps": 2}})


def test_fsdp_wraps_the_models_own_blocks(tiny_bert, tiny_vit, tiny_resnet):
    from hf_finetune.data.labels import LabelSpace
    from hf_finetune.models.backbones import build_text_model, build_tokenizer, build_vision_model
    from hf_finetune.recipe import ModelSpec

    labels = LabelSpace(("a", "b"), ("a", "b"))
    spec = ModelSpec(name=str(tiny_bert))
    assert block_classes(build_text_model(spec, labels, build_tokenizer(spec))) == ["BertLayer"]
    assert block_classes(build_vision_model(ModelSpec(name=str(tiny_vit)), labels)) == ["Block"]
    assert block_classes(build_vision_model(ModelSpec(name=str(tiny_resnet)), labels)) == ["BasicBlock"]


def launch_two_processes(recipe_path: Path) -> subprocess.CompletedProcess:
    command = two_process_launch("hf_finetune/run.py", str(recipe_path))
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)


def compare_one_and_two_processes(tmp_path: Path, recipe: dict, global_size: int = 16) -> tuple[dict, dict]:
    one, two = dict(recipe, output={"dir": str(tmp_path / "one")}), dict(recipe, output={"dir": str(tmp_path / "two")})
    assert main(["train", str(write_recipe(tmp_path / "one.yaml", one))]) == 0
    launched = launch_two_processes(write_recipe(tmp_path / "two.yaml", two))
    assert launched.returncode == 0, launched.stderr[-4000:]
    output = launched.stdout + launched.stderr
    assert output.count("Done in") == 1  # only the main process logs the summary
    half = global_size // 2
    assert output.count(f"Batch: {global_size} samples per optimizer step = 2 processes x {half} per device") == 1
    out = tmp_path / "two"
    assert not (out / ".staging").exists() and (out / "run.json").exists()
    assert not (out / "checkpoints").exists()
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=ATOL, rtol=RTOL, msg=key)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((out / "metrics.json").read_text())
    assert m1["train"]["batch"] == {"global": global_size, "processes": 1, "per_device": global_size,
                                    "accumulation_steps": 1}
    assert m2["train"]["batch"] == {"global": global_size, "processes": 2, "per_device": half, "accumulation_steps": 1}
    assert m1["train"]["steps"] == m2["train"]["steps"]
    return m1, m2


@pytest.mark.slow
def test_two_process_text_run_matches_one_process(tmp_path, text_recipe):
    from hf_finetune.testing import write_tiny_bert

    model = write_tiny_bert(tmp_path / "bert-no-dropout", POSITIVE + NEGATIVE + FILLER, dropout=0.0)
    text_recipe["model"]["name"] = str(model)
    # 17 validation rows: does not divide by 2 processes x batch 4.
    text_recipe["data"]["files"]["validation"] = str(write_csv(tmp_path / "data" / "val17.csv", review_rows(17, 5)))
    text_recipe["batch"] = {"global_size": 16}
    # fp32: bf16 (the CPU default where AMX exists) rounds differently when the batch is split in two.
    text_recipe["training"].update(num_train_epochs=2, per_device_eval_batch_size=4, learning_rate=5e-3, bf16=False)
    del text_recipe["training"]["per_device_train_batch_size"]
    text_recipe["training"]["per_device_train_batch_size"] = 16  # the cap: 16 per device on one process
    m1, m2 = compare_one_and_two_processes(tmp_path, text_recipe)
    for metrics in (m1, m2):
        report = metrics["validation"]
        assert report["num_samples"] == 17  # every sample once: none dropped, none counted twice
        assert sum(map(sum, report["confusion_matrix"]["matrix"])) == 17
        assert metrics["test"]["num_samples"] == 16
    assert m2["validation"]["confusion_matrix"] == m1["validation"]["confusion_matrix"]
    resolved = yaml.safe_load((tmp_path / "two" / "recipe.yaml").read_text())
    assert resolved["training"]["per_device_train_batch_size"] == 8
    assert resolved["batch"]["global_size"] == 16


@pytest.mark.slow
def test_two_process_vision_run_matches_one_process(tmp_path, vision_recipe, tiny_vit):
    vision_recipe["model"]["name"] = str(tiny_vit)  # LayerNorm: no per-process BatchNorm statistics
    # Deterministic augmentation, so both runs see the same pixels.
    vision_recipe["augmentation"] = {"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "hflip": 0.0,
                                     "color_jitter": 0.0}
    # 24 training images: a global batch of 12 leaves no partial last batch (which accelerate would
    # complete with repeated samples on one process; see README).
    vision_recipe["batch"] = {"global_size": 12}
    vision_recipe["training"].update(num_train_epochs=2, per_device_train_batch_size=16, per_device_eval_batch_size=4)
    m1, m2 = compare_one_and_two_processes(tmp_path, vision_recipe, global_size=12)
    assert m1["validation"]["num_samples"] == m2["validation"]["num_samples"] == 9
