"""text-regression and image-regression: the target space and its errors, the metrics (against scipy), the
baseline and collapse warning, recipe keys and refusals, and tiny runs end to end: standardised training, the
scale folded into the saved head (pipeline() and predict give original units), evaluate, ONNX export, LoRA."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import hf_finetune
from hf_finetune.cli import main
from hf_finetune.errors import DataError, RecipeError
from hf_finetune.metrics.regression import RegressionMetrics, add_regression_baselines, figures
from hf_finetune.recipe import validate_recipe

from .conftest import FILLER, NEGATIVE, POSITIVE, write_recipe

FAST = {"num_train_epochs": 1, "max_steps": 3, "per_device_train_batch_size": 8, "logging_steps": 1,
        "save_strategy": "no", "load_best_model_at_end": False, "bf16": False}


def rating_rows(n: int, seed: int) -> list[dict[str, object]]:
    """Texts of review words; `score` = positive minus negative words (+ noise) x 10 + 50, `length` = words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        pos, neg = rng.randint(0, 3), rng.randint(0, 3)
        words = [rng.choice(POSITIVE) for _ in range(pos)] + [rng.choice(NEGATIVE) for _ in range(neg)]
        words += [rng.choice(FILLER) for _ in range(rng.randint(1, 4))]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "score": round(50 + 10 * (pos - neg) + rng.gauss(0, 1), 2),
                     "length": len(words)})
    return rows


def write_rows(path: Path, rows: list[dict[str, object]]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def text_recipe(folder: Path, model: Path, targets: list[str] | None = None, **training) -> dict:
    files = {split: write_rows(folder / f"{split}.csv", rating_rows(n, seed))
             for split, n, seed in (("train", 240, 0), ("validation", 60, 1), ("test", 60, 2))}
    columns = {"targets": targets} if targets else {"label": "score"}
    return {"task": "text-regression", "model": {"name": str(model)},
            "data": {"files": files, "columns": columns, "cache_dir": str(folder / "cache")},
            "training": {"num_train_epochs": 8, "per_device_train_batch_size": 16, "learning_rate": 3e-3,
                         "logging_steps": 5, "bf16": False, **training},
            "output": {"dir": str(folder / "out")}}


@pytest.fixture(scope="session")
def regression_run(tmp_path_factory, tiny_bert) -> Path:
    """Two targets (score around 50 +- 20, length 1..10) on the tiny BERT: copy before changing anything in it."""
    folder = tmp_path_factory.mktemp("regression-run")
    recipe = write_recipe(folder / "recipe.yaml", text_recipe(folder, tiny_bert, ["score", "length"]))
    assert main(["train", str(recipe)]) == 0
    return folder / "out"


# --- metrics, baseline, collapse -------------------------------------------------------------------------------

def test_figures_are_scipys_and_sklearns():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(0)
    true = rng.normal(size=50)
    pred = true + rng.normal(scale=0.5, size=50)
    got = figures(pred, true)
    assert got["pearson"] == pytest.approx(pearsonr(pred, true)[0])
    assert got["spearman"] == pytest.approx(spearmanr(pred, true)[0])
    assert got["rmse"] == pytest.approx(np.sqrt(((pred - true) ** 2).mean()))
    assert got["mae"] == pytest.approx(np.abs(pred - true).mean())
    assert got["r2"] == pytest.approx(1 - ((pred - true) ** 2).sum() / ((true - true.mean()) ** 2).sum())
    constant = figures(np.full(50, 0.3), true)
    assert constant["pearson"] == 0.0 and constant["spearman"] == 0.0


def test_metrics_map_standardised_values_back_and_average_over_targets():
    rng = np.random.default_rng(1)
    true = np.c_[rng.normal(50, 20, 40), rng.normal(3, 1, 40)]
    pred = true + rng.normal(0, [2.0, 0.5], (40, 2))
    mean, std = np.array([48.0, 2.5]), np.array([19.0, 1.2])
    metrics = RegressionMetrics(["rmse", "pearson"], ["score", "length"], mean, std)
    scaled = metrics.compute((pred - mean) / std, (true - mean) / std)
    assert list(scaled) == ["rmse", "pearson"]
    direct = [figures(pred[:, i], true[:, i]) for i in range(2)]
    assert scaled["rmse"] == pytest.approx(np.mean([d["rmse"] for d in direct]))
    report = metrics.report((pred - mean) / std, (true - mean) / std)
    assert report["per_target"]["score"]["mae"] == pytest.approx(direct[0]["mae"])
    assert report["mean_baseline"]["rmse"] == pytest.approx(np.mean(
        [np.sqrt(((true[:, i] - mean[i]) ** 2).mean()) for i in range(2)]))
    assert len(report["points"]["true"]) == 40 and report["num_samples"] == 40


def test_the_training_mean_baseline_and_the_collapse_warning():
    true = np.linspace(-2, 2, 30)
    metrics = RegressionMetrics(["pearson"], ["y"], [0.0], [1.0])
    good = {"test": metrics.report(true + 0.1 * np.sin(true), true)}
    assert add_regression_baselines(good) == []
    assert good["test"]["majority_baseline"]["class"] == "the training mean"
    collapsed = {"test": metrics.report(0.01 * true, true)}
    [warning] = add_regression_baselines(collapsed)
    assert "predicts 'y' with a spread" in warning and "below 10%" in warning and "collapsed" in warning


# --- the target space ---------------------------------------------------------------------------------------

def _check_data(tmp_path: Path, rows: list[dict], columns: dict, tiny_bert: Path, split_rows=None) -> None:
    files = {"train": write_rows(tmp_path / "train.csv", rows),
             "validation": write_rows(tmp_path / "validation.csv", split_rows or rows)}
    recipe = {"task": "text-regression", "model": {"name": str(tiny_bert)},
              "data": {"files": files, "columns": columns, "splits": {"test": None}},
              "output": {"dir": str(tmp_path / "out")}}
    hf_finetune.check(recipe)


@pytest.mark.parametrize("bad, columns, message", [
    ({"score": "high"}, {"label": "score"},
     "data.columns.label: column 'score' of split 'train' holds 'high' at row 2 (*train.csv), not a number"),
    ({"score": "nan"}, {"label": "score"},
     "data.columns.label: column 'score' of split 'train' has no value (empty, null or NaN) at row 2 (*train.csv)"),
    ({"score": ""}, {"label": "score"}, "column 'score' of split 'train' has no value (empty, null or NaN) at row 2"),
    ({"score": "inf"}, {"label": "score"}, "column 'score' of split 'train' has inf (not a finite number) at row 2"),
    ({}, {"targets": ["score", "stars"]}, "data.columns.targets: column 'stars' not found in split 'train'"),
])
def test_target_errors_name_the_column_split_and_row(tmp_path, tiny_bert, bad, columns, message):
    rows = [{"text": "good film", "score": 1.5}, {"text": "bad film", "score": -2}, {"text": "dull", "score": 0.25}]
    rows[2].update(bad)
    pattern = message.replace("(", r"\(").replace(")", r"\)").replace("*", ".*")
    with pytest.raises(DataError, match=pattern):
        _check_data(tmp_path, rows, columns, tiny_bert)


def test_a_constant_target_is_an_error(tmp_path, tiny_bert):
    rows = [{"text": "good film", "score": 3}, {"text": "bad film", "score": 3}]
    with pytest.raises(DataError, match="column 'score' of split 'train' is constant \\(3 in every row\\)"):
        _check_data(tmp_path, rows, {"label": "score"}, tiny_bert)


def test_targets_are_standardised_by_the_training_split(tmp_path):
    from datasets import Dataset

    from hf_finetune.tasks.targets import TargetLabeling

    train = Dataset.from_dict({"text": ["a", "b", "c", "d"], "y": [1.0, 2.0, 3.0, 4.0], "z": ["10", "20", "30", "40"]})
    valid = Dataset.from_dict({"text": ["e"], "y": [5.0], "z": ["50"]})
    recipe = validate_recipe({"task": "text-regression", "model": {"name": "m"},
                              "data": {"files": {"train": _a_file(tmp_path)}, "columns": {"targets": ["y", "z"]}}},
                             purpose="evaluate")
    splits, space, notes = TargetLabeling().prepare({"train": train, "validation": valid}, recipe,
                                                    {"train": "train", "validation": "validation"})
    assert space.names == ("y", "z") and space.problem_type == "regression" and space.num_labels == 2
    assert space.mean == pytest.approx((2.5, 25.0)) and space.std == pytest.approx((np.sqrt(1.25), np.sqrt(125)))
    assert np.asarray(splits["train"]["labels"]).mean(axis=0) == pytest.approx([0, 0], abs=1e-6)
    assert splits["validation"]["labels"][0] == pytest.approx([2.5 / np.sqrt(1.25)] * 2, rel=1e-5)
    assert "y" not in splits["train"].column_names and notes["targets"]["mean"] == pytest.approx([2.5, 25.0])


# --- the recipe -------------------------------------------------------------------------------------------------

def _a_file(folder: Path) -> str:
    return write_rows(folder / "a.csv", [{"text": "a", "y": 1.0}])


def test_recipe_defaults_select_on_pearson_and_rmse_is_minimised(tmp_path):
    base = {"task": "text-regression", "model": {"name": "m"}, "data": {"files": {"train": _a_file(tmp_path)}}}
    recipe = validate_recipe(base, purpose="evaluate")
    assert recipe.metrics == ["pearson", "spearman", "rmse", "mae", "r2"]
    assert recipe.training["metric_for_best_model"] == "pearson" and recipe.training["greater_is_better"] is True
    assert recipe.data.columns.text == "text" and recipe.finetune.regression_loss == "mse"
    rmse = validate_recipe({**base, "metrics": ["rmse", "pearson"]}, purpose="evaluate")
    assert rmse.training["metric_for_best_model"] == "rmse" and rmse.training["greater_is_better"] is False
    image = validate_recipe({**base, "task": "image-regression"}, purpose="evaluate")
    assert image.data.columns.image == "image" and image.data.columns.text is None


def test_recipe_problems_of_the_regression_keys(tmp_path):
    raw = {"task": "text-regression", "model": {"name": "m"},
           "data": {"files": {"train": _a_file(tmp_path)}, "columns": {"targets": ["y", "y"], "label": "z"}},
           "metrics": ["pearson", "accuracy"], "finetune": {"regression_loss": "l1"},
           "augmentation": {"mixup": 0.2}}
    with pytest.raises(RecipeError) as caught:
        validate_recipe(raw, purpose="evaluate")
    text = str(caught.value)
    for expected in ("data.columns.targets: names a column twice",
                     "data.columns.label: give the targets in data.columns.targets or one in data.columns.label",
                     "metrics[1]: 'accuracy' does not apply to text-regression",
                     "finetune.regression_loss: 'l1' is not allowed",
                     "augmentation: only applies to task: image-classification or image-regression"):
        assert expected in text
    with pytest.raises(RecipeError, match="finetune.class_weights: weights classes; text-regression predicts numbers"):
        validate_recipe({"task": "text-regression", "model": {"name": "m"}, "finetune": {"class_weights": "balanced"},
                         "data": {"files": {"train": _a_file(tmp_path)}}}, purpose="evaluate")
    with pytest.raises(RecipeError, match="data.columns.targets: only applies to tasks: text-regression"):
        validate_recipe({"task": "text-classification", "model": {"name": "m"},
                         "data": {"files": {"train": _a_file(tmp_path)}, "columns": {"targets": ["y"]}}},
                        purpose="evaluate")


@pytest.mark.parametrize("extra, key, capability", [
    ({"self_training": {}, "data": {"unlabeled": {"files": ["POOL"]}}}, "self_training", "self training"),
    ({"distill": {"teacher": "RUN"}}, "distill.teacher", "distill"),
])
def test_capabilities_it_does_not_serve_are_refused_naming_the_task(tmp_path, tiny_bert, regression_run, extra, key,
                                                                     capability):
    raw = text_recipe(tmp_path, tiny_bert)
    pool = write_rows(tmp_path / "pool.csv", [{"text": "good"}, {"text": "bad"}])
    for section, values in yaml.safe_load(yaml.safe_dump(extra).replace("POOL", pool)
                                          .replace("RUN", str(regression_run))).items():
        raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises(RecipeError, match=f"{key}: task text-regression does not support {capability}"):
        hf_finetune.check(raw, data=False)


def test_commands_it_does_not_serve_are_refused(regression_run):
    from hf_finetune.combine.members import load_members
    from hf_finetune.errors import UserError
    from hf_finetune.tasks import check_capabilities

    for capability in ("ensemble", "soup"):
        with pytest.raises(UserError, match=f"task text-regression does not support {capability}"):
            load_members([regression_run, regression_run], capability=capability)
    recipe = validate_recipe(yaml.safe_load((regression_run / "recipe.yaml").read_text()), purpose="evaluate")
    with pytest.raises(RecipeError, match="task text-regression does not support rank"):
        check_capabilities(recipe, "rank")
    check_capabilities(recipe, "tune")


# --- end to end -----------------------------------------------------------------------------------------------

def test_the_output_folder_reports_values_in_original_units(regression_run):
    metrics = json.loads((regression_run / "metrics.json").read_text())
    for split in ("validation", "test"):
        report = metrics[split]
        assert {"pearson", "spearman", "rmse", "mae", "r2", "loss"} <= set(report)
        assert set(report["per_target"]) == {"score", "length"}
        assert report["per_target"]["score"]["true_std"] > 10  # original units (a standardised one is about 1)
        assert report["majority_baseline"]["class"] == "the training mean"
    assert metrics["test"]["per_target"]["score"]["pearson"] > 0.8
    assert metrics["test"]["rmse"] < metrics["test"]["majority_baseline"]["rmse"]
    config = json.loads((regression_run / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score", "1": "length"}
    scale = config["hf_finetune_target_scale"]
    assert scale["folded"] is True and 45 < scale["mean"][0] < 55 and scale["std"][0] > 10
    files = set(p.name for p in regression_run.iterdir())
    assert {"predicted_vs_true_validation.png", "predicted_vs_true_test.png"} <= files
    assert not any(name.startswith("confusion_matrix") for name in files)
    card = (regression_run / "README.md").read_text()
    # the model-index task is the Hub's (what pipeline() calls it), named for what the model does
    assert "pipeline_tag: text-classification" in card and "type: text-classification" in card
    assert "name: Text Regression" in card
    assert "### Per target (test)" in card and "| target | Pearson correlation |" in card
    assert 'function_to_apply="none"' in card and "For scale, always predicting the training mean" in card
    assert yaml.safe_load((regression_run / "recipe.yaml").read_text())["training"]["metric_for_best_model"] == "pearson"


def test_pipeline_and_predict_give_the_runs_test_figures_in_original_units(regression_run, tmp_path, capsys):
    from transformers import pipeline

    test = list(csv.DictReader(open(Path(regression_run).parent / "test.csv", encoding="utf-8")))
    regressor = pipeline("text-classification", model=str(regression_run), function_to_apply="none", top_k=None)
    out = regressor([r["text"] for r in test])
    values = np.array([[next(d["score"] for d in row if d["label"] == name) for name in ("score", "length")]
                       for row in out])
    truth = np.array([[float(r["score"]), float(r["length"])] for r in test])
    metrics = json.loads((regression_run / "metrics.json").read_text())["test"]
    assert figures(values[:, 0], truth[:, 0])["rmse"] == pytest.approx(metrics["per_target"]["score"]["rmse"], rel=1e-3)
    assert main(["predict", str(regression_run), test[0]["text"], "--output", str(tmp_path / "p.jsonl")]) == 0
    record = json.loads((tmp_path / "p.jsonl").read_text())
    assert record["score"] == pytest.approx(values[0, 0], abs=1e-3) and record["length"] == pytest.approx(values[0, 1],
                                                                                                           abs=1e-3)
    assert "score " in capsys.readouterr().out


def test_evaluate_and_onnx_export_read_original_units(regression_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(regression_run, run)
    new = write_rows(tmp_path / "new.csv", rating_rows(30, 9))
    assert main(["evaluate", str(run), "--data", new]) == 0
    report = json.loads((run / "evaluation-new.json").read_text())
    assert report["num_samples"] == 30 and report["per_target"]["score"]["pearson"] > 0.7
    assert report["per_target"]["score"]["rmse"] < 10 and (run / "evaluation-new-predicted_vs_true.png").is_file()
    assert "score: pearson" in capsys.readouterr().out
    pytest.importorskip("onnxruntime")
    assert main(["export", str(run), "--format", "onnx"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), "good superb film"]) == 0
    torch_line = capsys.readouterr().out.strip()
    assert main(["predict", str(run), "--onnx", "good superb film"]) == 0
    onnx_line = capsys.readouterr().out.strip()
    assert onnx_line == torch_line


@pytest.mark.parametrize("finetune", [
    {"strategy": "lora", "lora": {"r": 4}, "regression_loss": "huber"},
    {"strategy": "linear_probe", "cache_features": True},
])
def test_strategies_save_a_folder_in_original_units(tmp_path, tiny_bert, finetune):
    """The folded head reproduces the run's test figures from the saved folder, whichever path saved it."""
    if finetune["strategy"] == "lora":
        pytest.importorskip("peft")
    recipe = text_recipe(tmp_path, tiny_bert, **FAST)
    recipe["finetune"] = finetune
    result = hf_finetune.train(recipe)
    from transformers import pipeline

    regressor = pipeline("text-classification", model=str(result.output_dir), function_to_apply="none")
    assert regressor.model.config.problem_type == "regression"
    assert regressor.model.config.hf_finetune_target_scale["folded"]
    test = list(csv.DictReader(open(tmp_path / "test.csv", encoding="utf-8")))
    values = [r["score"] for r in regressor([r["text"] for r in test])]
    rmse = figures(np.array(values), np.array([float(r["score"]) for r in test]))["rmse"]
    assert rmse == pytest.approx(result.metrics["test"]["rmse"], rel=1e-3)


def test_image_regression_end_to_end(tmp_path, tiny_resnet):
    """Brightness of a striped image as the target; the saved timm folder outputs it in original units."""
    from hf_finetune.testing import pattern_image

    rng = random.Random(0)
    rows = {}
    for split, n in (("train", 24), ("validation", 8), ("test", 8)):
        (tmp_path / split).mkdir()
        rows[split] = []
        for i in range(n):
            level = rng.uniform(0.2, 1.0)
            image = pattern_image(rng.choice(["horizontal", "vertical"]), rng, size=32).point(lambda v, k=level: v * k)
            path = tmp_path / split / f"{i}.png"
            image.save(path)
            rows[split].append({"image": str(path), "brightness": round(100 * level, 2)})
    files = {split: write_rows(tmp_path / f"{split}.csv", r) for split, r in rows.items()}
    recipe = {"task": "image-regression", "model": {"name": str(tiny_resnet)},
              "data": {"files": files, "columns": {"label": "brightness"}, "cache_dir": str(tmp_path / "cache")},
              "training": {**FAST, "max_steps": 2}, "output": {"dir": str(tmp_path / "out")}}
    result = hf_finetune.train(recipe)
    assert result.metrics["test"]["per_target"]["brightness"]["true_std"] > 5
    from transformers import pipeline

    out = pipeline("image-classification", model=str(result.output_dir))(rows["test"][0]["image"])
    assert out[0]["label"] == "brightness" and isinstance(out[0]["score"], float)


def test_tune_minimises_rmse_when_the_run_selects_on_it(tmp_path, tiny_bert):
    pytest.importorskip("optuna")
    recipe = text_recipe(tmp_path, tiny_bert, **{**FAST, "max_steps": 2, "save_strategy": "epoch",
                                                 "load_best_model_at_end": True})
    recipe["metrics"] = ["rmse", "pearson"]
    recipe["search"] = {"space": {"training.learning_rate": {"choices": [3e-3, 1e-3]}}, "trials": 2,
                        "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"}}
    assert main(["tune", str(write_recipe(tmp_path / "tune.yaml", recipe))]) == 0
    summary = json.loads((tmp_path / "out" / "best" / "search.json").read_text())
    assert summary["objective"]["metric"] == "validation rmse" and summary["objective"]["direction"] == "minimize"
    config = json.loads((tmp_path / "out" / "best" / "config.json").read_text())
    assert config["hf_finetune_target_scale"]["folded"] is True


def test_a_bare_model_folder_is_read_as_regression_by_its_problem_type(regression_run, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(regression_run / name, bare / name)
    assert main(["predict", str(bare), "good superb film"]) == 0
    assert capsys.readouterr().out.startswith("score ")
