"""End to end on a tiny BERT: files written, metrics, pipeline() with label names, cache, protection."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from hf_finetune.cli import main
from hf_finetune.recipe import load_recipe

from .conftest import REPO, write_recipe

MODEL_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture
def finished_run(tmp_path, text_recipe):
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    assert main(["train", str(path)]) == 0
    return path, tmp_path / "out"


def test_text_run_writes_a_usable_output_folder(finished_run):
    recipe_path, out = finished_run
    files = {p.name for p in out.iterdir()}
    assert MODEL_FILES | {"recipe.yaml", "metrics.json", "run.json"} <= files
    assert "training_args.bin" not in files and "checkpoints" not in files and ".staging" not in files

    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("validation", "test"):
        report = metrics[split]
        assert {"accuracy", "precision", "recall", "f1", "loss"} <= set(report)
        assert set(report["per_class"]) == {"neg", "pos"}
        assert set(report["per_class"]["pos"]) == {"precision", "recall", "f1", "support"}
        assert report["confusion_matrix"]["labels"] == ["neg", "pos"]
        matrix = report["confusion_matrix"]["matrix"]
        assert sum(map(sum, matrix)) == report["num_samples"] == 16
        # accuracy is the diagonal share of the confusion matrix
        assert report["accuracy"] == pytest.approx((matrix[0][0] + matrix[1][1]) / 16)
    assert metrics["train"]["steps"] == 6  # 48 rows / batch 16 * 2 epochs

    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["labels"] == ["neg", "pos"]
    assert set(run["files"]) >= MODEL_FILES | {"recipe.yaml", "metrics.json"}
    assert run["splits"]["train"]["rows"] == 48
    # Data-aware: the longest training review is a few words, so max_length covers them (a multiple of 8),
    # not the tiny tokenizer's limit of 128.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    longest = max(len(ids) for ids in tokenizer(review_rows_texts(48))["input_ids"])
    assert run["preprocessing"]["max_length"] == -(-longest // 8) * 8 < 128

    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}

    # The resolved recipe is itself a valid recipe.
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["preprocessing"]["max_length"] == run["preprocessing"]["max_length"]
    assert resolved["training"]["learning_rate"] == 1e-3
    again = load_recipe(out / "recipe.yaml")
    assert again.model.name == resolved["model"]["name"]


def test_pipeline_loads_the_output_and_answers_with_label_names(finished_run):
    from transformers import pipeline

    _, out = finished_run
    classifier = pipeline("text-classification", model=str(out))
    answers = classifier(["the movie was really great", "the plot was dull"])
    assert {a["label"] for a in answers} <= {"neg", "pos"}
    assert all(0.0 <= a["score"] <= 1.0 for a in answers)


def test_finished_run_is_protected_and_second_run_reuses_the_cache(finished_run):
    recipe_path, out = finished_run
    before = (out / "model.safetensors").read_bytes()
    assert main(["train", str(recipe_path)]) == 2  # refused: a finished run is there
    assert (out / "model.safetensors").read_bytes() == before

    assert main(["train", str(recipe_path), "output.overwrite=true"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert all(entry["reused"] for entry in run["preprocessing_cache"].values())

    assert main(["train", str(recipe_path), "output.overwrite=true", "preprocessing.max_length=16"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert not any(entry["reused"] for entry in run["preprocessing_cache"].values())


def test_refusal_message_says_how_to_proceed(finished_run, capsys):
    recipe_path, out = finished_run
    assert main(["train", str(recipe_path)]) == 2
    err = capsys.readouterr().err
    assert f"output.dir: {out} holds a finished run" in err and "output.overwrite=true" in err
    assert "Traceback" not in err


def test_max_length_above_the_backbone_limit_is_an_error(tmp_path, text_recipe, capsys):
    text_recipe["preprocessing"] = {"max_length": 4096}
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    assert main(["train", str(path)]) == 2
    assert "preprocessing.max_length: 4096 exceeds the backbone's limit of 128 tokens" in capsys.readouterr().err


def test_check_prints_the_resolved_recipe(tmp_path, text_recipe, capsys):
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    assert main(["check", str(path), "training.learning_rate=5e-5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {path}: valid. Pre-flight:")
    assert "#   labels:     neg, pos" in out and "#   train:      split 'train', 48 rows" in out
    assert "(local folder, bert)" in out and "f1 (bundled)" in out
    resolved = yaml.safe_load(out)
    assert resolved["training"]["learning_rate"] == 5e-5
    assert resolved["training"]["eval_strategy"] == "epoch"
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_cli_errors_are_messages_not_tracebacks(tmp_path, text_recipe):
    text_recipe["training"]["learning_rat"] = 1
    text_recipe["model"]["nam"] = "x"
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    proc = subprocess.run([sys.executable, "-m", "hf_finetune.cli", "check", str(path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "invalid recipe, 2 problems" in proc.stderr
    assert "training.learning_rat: unknown TrainingArguments field; did you mean 'learning_rate'?" in proc.stderr
    assert "model.nam: unknown key; did you mean 'name'?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_py_script_is_the_same_entry_point(tmp_path, text_recipe):
    """`accelerate launch hf_finetune/run.py RECIPE` runs run.py as a plain script; so does python."""
    text_recipe["training"]["num_train_epochs"] = 1
    text_recipe["data"]["max_samples"] = {"train": 16, "validation": 8, "test": 8}
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    proc = subprocess.run([sys.executable, "hf_finetune/run.py", str(path), "training.seed=3"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "complete"
    resolved = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    assert resolved["training"]["seed"] == 3


def test_same_recipe_and_seed_give_identical_weights(tmp_path, text_recipe):
    from safetensors.torch import load_file

    outs = []
    for name in ("a", "b"):
        text_recipe["output"]["dir"] = str(tmp_path / name)
        text_recipe["training"]["num_train_epochs"] = 1
        path = write_recipe(tmp_path / f"{name}.yaml", text_recipe)
        assert main(["train", str(path)]) == 0
        outs.append(load_file(tmp_path / name / "model.safetensors"))
    assert outs[0].keys() == outs[1].keys()
    for key in outs[0]:
        assert (outs[0][key] == outs[1][key]).all(), key


def review_rows_texts(n: int) -> list[str]:
    from .conftest import review_rows

    return [row["text"] for row in review_rows(n, seed=0)]
