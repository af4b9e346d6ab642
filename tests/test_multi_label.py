"""Multi-label classification (text-multi-label, image-multi-label): label sets read three ways and their
errors, the metrics against scikit-learn, thresholds, baselines and the collapse warning, pos_weight, and a
tiny BERT and a tiny ResNet end to end (folder, card, pipeline(), predict, evaluate, ONNX, LoRA)."""

from __future__ import annotations

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
from hf_finetune.recipe.validation import validate_recipe

from .conftest import FILLER, NEGATIVE, POSITIVE, write_recipe
from .helpers.isolation import write_csv

FAST = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "save_strategy": "no",
        "load_best_model_at_end": False, "bf16": False, "logging_steps": 1}


def review_sets(n: int, seed: int) -> list[dict[str, str]]:
    """Reviews with praise ('pos'), complaints ('neg'), both or neither; labels joined by '|'."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        labels = [["pos"], ["neg"], ["pos", "neg"], []][i % 4]
        words = [rng.choice(FILLER)] + [rng.choice(POSITIVE if x == "pos" else NEGATIVE) for x in labels]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": "|".join(labels)})
    return rows


def files(folder: Path, sizes=(("train", 48, 0), ("validation", 16, 1), ("test", 16, 2))) -> dict[str, str]:
    return {split: str(write_csv(folder / f"{split}.csv", review_sets(n, seed))) for split, n, seed in sizes}


def text_recipe(tmp_path: Path, model: Path, data: dict[str, str], **data_keys) -> dict:
    return {"task": "text-multi-label", "model": {"name": str(model)},
            "data": {"files": data, "cache_dir": str(tmp_path / "cache"), "columns": {"label": "labels"},
                     "label_separator": "|", **data_keys},
            "training": dict(FAST), "output": {"dir": str(tmp_path / "out")}}


def prepare(recipe: dict):
    from hf_finetune.data import build_datasets
    from hf_finetune.tasks import task_of

    recipe = validate_recipe(recipe)
    task = task_of(recipe)
    return build_datasets(recipe, task.inputs.preprocessing(recipe).encoding, labeling=task.problem.labeling)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_bert) -> Path:
    folder = tmp_path_factory.mktemp("ml-text")
    recipe = text_recipe(folder, tiny_bert, files(folder / "data"))
    recipe["training"].update(num_train_epochs=6)
    assert main(["train", str(write_recipe(folder / "recipe.yaml", recipe))]) == 0
    return folder / "out"


# --- labels read three ways, and their errors -------------------------------------------------------------------

def test_separator_lists_and_01_columns_give_the_same_label_rows(tmp_path, tiny_bert):
    data = files(tmp_path / "sep")
    by_separator = prepare(text_recipe(tmp_path, tiny_bert, data))
    assert by_separator.labels.names == ("neg", "pos")
    assert by_separator.labels.problem_type == "multi_label_classification"
    expected = by_separator.splits["train"]["labels"][:4]
    assert expected == [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]  # pos, neg, both, none ("no label")
    rows = review_sets(48, 0)
    lists = tmp_path / "lists"
    lists.mkdir()
    for split in ("train", "validation"):
        with open(lists / f"{split}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps({"text": r["text"], "tags": [x for x in r["labels"].split("|") if x]}) + "\n")
    recipe = text_recipe(tmp_path, tiny_bert, {s: str(lists / f"{s}.jsonl") for s in ("train", "validation")})
    recipe["data"].pop("label_separator")
    recipe["data"]["columns"] = {"label": "tags"}
    assert prepare(recipe).splits["train"]["labels"][:4] == expected
    columns = [{"text": r["text"], "neg": int("neg" in r["labels"]), "pos": int("pos" in r["labels"])} for r in rows]
    data = {"train": str(write_csv(tmp_path / "cols" / "train.csv", columns))}
    recipe = text_recipe(tmp_path, tiny_bert, data)
    recipe["data"].pop("label_separator")
    recipe["data"]["columns"] = {"labels": ["neg", "pos"]}
    prepared = prepare(recipe)  # validation carved (seeded, not stratified)
    assert prepared.labels.names == ("neg", "pos") and len(prepared.splits["validation"]) == 5


def _write(path: Path, rows: list[dict]) -> str:
    return str(write_csv(path, rows))


@pytest.mark.parametrize("case, message", [
    ("not01", "data.columns.labels: column 'pos' of split 'train' row 1 (*c.csv) holds 2; each label column "
              "holds 0 or 1"),
    ("unseen", "data.columns.label: split 'validation' row 0 (*v.csv) has label 'meh' that does not appear in the "
               "training split; labels: neg, pos"),
    ("lists+separator", "data.label_separator: column 'labels' of split 'train' already holds lists of labels"),
    ("no-separator", "to split a delimited string such as 'a|b', set data.label_separator"),
    ("one-label", "split 'train' has one label (pos); multi-label classification needs at least two"),
])
def test_bad_label_data_is_named_by_key_split_column_and_row(tmp_path, tiny_bert, case, message):
    good = review_sets(8, 0)
    recipe = text_recipe(tmp_path, tiny_bert, {"train": _write(tmp_path / "t.csv", good)})
    if case == "not01":
        rows = [{"text": r["text"], "neg": 0, "pos": 1} for r in good]
        rows[1]["pos"] = 2
        recipe["data"].update(files={"train": _write(tmp_path / "c.csv", rows)}, columns={"labels": ["neg", "pos"]})
        recipe["data"].pop("label_separator")
    elif case == "unseen":
        recipe["data"]["files"]["validation"] = _write(tmp_path / "v.csv", [{"text": "good", "labels": "meh|pos"}])
    elif case == "lists+separator":
        path = tmp_path / "l.jsonl"
        path.write_text("\n".join(json.dumps({"text": r["text"], "labels": ["pos"]}) for r in good))
        recipe["data"]["files"] = {"train": str(path)}
    elif case == "no-separator":
        recipe["data"].pop("label_separator")
    else:
        recipe["data"]["files"] = {"train": _write(tmp_path / "o.csv", [{"text": "x", "labels": "pos"}] * 8)}
    with pytest.raises(DataError, match=None) as caught:
        prepare(recipe)
    head, _, tail = message.partition("*")  # * stands for the file's folder
    assert head in str(caught.value) and tail in str(caught.value)


def test_recipe_keys_of_label_sets_are_checked(tmp_path, tiny_bert):
    raw = text_recipe(tmp_path, tiny_bert, {"train": "t.csv"})
    recipe = validate_recipe({**raw, "training": {}, "data": {**raw["data"], "files": {
        "train": _write(tmp_path / "t.csv", review_sets(4, 0))}}})
    # selection on macro-F1 at the tuned thresholds, whatever the metrics list starts with
    assert recipe.training["metric_for_best_model"] == "f1" and recipe.training["greater_is_better"]
    wrong = {**raw, "metrics": ["f1", "matthews_correlation"],
             "data": {**raw["data"], "columns": {"label": "labels", "labels": ["a", "a"]}}}
    with pytest.raises(RecipeError) as caught:
        validate_recipe(wrong)
    text = str(caught.value)
    for expected in ("metrics[1]: 'matthews_correlation' does not apply to text-multi-label",
                     "data.columns.labels: one 0/1 column per label replaces data.columns.label",
                     "data.label_separator: splits a string label column", "data.columns.labels: names column 'a' twice"):
        assert expected in text
    image = {"task": "image-multi-label", "model": {"name": "m"}, "data": {"image_folder": str(tmp_path)},
             "augmentation": {"mixup": 0.2}}
    with pytest.raises(RecipeError) as caught:
        validate_recipe(image)
    assert {p.path for p in caught.value.problems} >= {"data.image_folder", "augmentation.mixup"}
    single = {**raw, "task": "text-classification"}
    with pytest.raises(RecipeError, match="data.label_separator: only applies to tasks: image-multi-label, "
                                          "text-multi-label"):
        validate_recipe(single)


@pytest.mark.parametrize("extra, key, capability", [
    ({"self_training": {}, "data": {"unlabeled": {"files": ["POOL"]}}}, "self_training", "self training"),
    ({"distill": {"teacher": "TEACHER"}}, "distill.teacher", "distill"),
])
def test_capabilities_it_does_not_serve_are_refused_naming_the_task(tmp_path, tiny_bert, extra, key, capability):
    raw = text_recipe(tmp_path, tiny_bert, {"train": _write(tmp_path / "t.csv", review_sets(8, 0))})
    pool = _write(tmp_path / "pool.csv", [{"text": "good film"}])
    for section, values in yaml.safe_load(yaml.safe_dump(extra).replace("TEACHER", str(tmp_path))
                                          .replace("POOL", pool)).items():
        raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises(RecipeError, match=f"{key}: task text-multi-label does not support {capability}"):
        hf_finetune.check(raw, data=False)


# --- metrics, thresholds, baselines, loss -------------------------------------------------------------------

def test_metrics_are_scikit_learns_figures():
    from sklearn.metrics import average_precision_score, f1_score, hamming_loss

    from hf_finetune.metrics.multi_label import MultiLabelMetrics

    rng = np.random.default_rng(0)
    truth = rng.random((60, 4)) < 0.3
    truth[:, 0] = False
    truth[:5, 0] = True  # a rare label
    probs = np.clip(truth * 0.5 + rng.random((60, 4)) * 0.6, 0, 1)
    metrics = MultiLabelMetrics(["f1"], ["a", "b", "c", "d"],
                                {"global": 0.5, "per_label": {k: 0.5 for k in "abcd"}})
    report = metrics.report(probs, truth.astype(float))
    pred = probs >= 0.5
    assert report["f1"] == pytest.approx(f1_score(truth, pred, average="macro", zero_division=0))
    assert report["micro_f1"] == pytest.approx(f1_score(truth, pred, average="micro", zero_division=0))
    nonempty = truth.any(1) | pred.any(1)  # sklearn scores a row with nothing true and nothing predicted 0; we 1
    samples = f1_score(truth, pred, average="samples", zero_division=0) * len(truth) + (~nonempty).sum()
    assert report["samples_f1"] == pytest.approx(samples / len(truth))
    assert report["hamming_loss"] == pytest.approx(hamming_loss(truth, pred))
    assert report["accuracy"] == pytest.approx((truth == pred).all(1).mean())
    assert report["average_precision"] == pytest.approx(average_precision_score(truth, probs, average="macro"))
    assert report["per_class"]["a"]["support"] == 5 and report["thresholds"]["tuned_on_this_split"] is False


def test_thresholds_are_tuned_per_label_and_rare_labels_take_the_global_one():
    from hf_finetune.metrics.multi_label import MIN_POSITIVES_TO_TUNE, MultiLabelMetrics

    rng = np.random.default_rng(1)
    truth = np.zeros((200, 3), dtype=bool)
    truth[:80, 0] = True
    truth[:40, 1] = True
    truth[:MIN_POSITIVES_TO_TUNE - 1, 2] = True
    probs = rng.random((200, 3)) * 0.3
    probs[:80, 0] += 0.25  # label a: positives between 0.25 and 0.55, so 0.5 misses most of them
    probs[:40, 1] += 0.6
    metrics = MultiLabelMetrics(["f1"], ["a", "b", "c"])
    report = metrics.report(probs, truth)
    t = report["thresholds"]
    assert t["tuned_on_this_split"] and t["per_label"]["a"] < 0.35 and t["per_label"]["c"] == t["global"]
    assert report["per_class"]["a"]["f1"] > 0.9 and report["f1"] > report["f1_untuned"]
    again = metrics.report(probs, truth)  # the next split (test) is scored at the same thresholds
    assert again["thresholds"]["tuned_on_this_split"] is False and again["f1"] == report["f1"]


def test_frequency_and_no_label_baselines_and_the_collapse_warning():
    from hf_finetune.metrics.multi_label import MultiLabelMetrics, add_multi_label_baselines
    from hf_finetune.tasks.label_sets import positive_counts

    truth = np.array([[1, 0], [0, 1], [0, 0], [1, 1]] * 5, dtype=float)
    counts = positive_counts(np.array([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=float))  # shares 0.5 and 0.25
    same = np.tile([0.9, 0.1], (20, 1))  # {a} for every row: collapsed
    metrics = MultiLabelMetrics(["f1"], ["a", "b"], {"global": 0.5, "per_label": {"a": 0.5, "b": 0.5}})
    results = {"test": metrics.report(same, truth)}
    warnings = add_multi_label_baselines(results, counts)
    base = results["test"]["majority_baseline"]
    assert base["f1"] == pytest.approx(np.mean([2 * 0.5 * 0.5 / 1.0, 2 * 0.25 * 0.5 / 0.75]))
    assert results["test"]["no_label_baseline"]["accuracy"] == pytest.approx(0.25)
    assert len(warnings) == 1 and "predicts the same label set ({a}) for 100% of the test rows" in warnings[0]
    assert not add_multi_label_baselines({"test": metrics.report(truth * 0.8 + 0.1, truth)}, counts)


def test_pos_weight_is_decided_for_rare_labels_and_weighs_bce():
    import torch

    from hf_finetune.metrics.multi_label import pos_weights
    from hf_finetune.tasks.label_sets import positive_counts
    from hf_finetune.tasks.multi_label import MultiLabel, MultiLabelLoss

    matrix = np.zeros((100, 2))
    matrix[:50, 0] = 1
    matrix[:4, 1] = 1
    counts = positive_counts(matrix)
    [(key, value, reason)] = MultiLabel().data_defaults(counts, counts.rows, ["common", "rare"])
    assert (key, value) == ("finetune.class_weights", "balanced") and "'rare' is on 4 of 100 training rows" in reason
    assert pos_weights(counts, 100) == [1.0, pytest.approx(24 ** 0.5)]
    assert MultiLabel().data_defaults(positive_counts(matrix[:, :1].repeat(2, 1)), 100, ["a", "b"]) == []
    logits, targets = torch.tensor([[0.3, -1.0]]), torch.tensor([[1.0, 1.0]])
    weight = torch.tensor([1.0, 3.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight,
                                                                    reduction="none")
    assert torch.allclose(MultiLabelLoss(pos_weight=weight)(logits, targets), expected)


# --- end to end -----------------------------------------------------------------------------------------------

def test_the_output_folder_has_thresholds_figures_and_card(text_run):
    config = json.loads((text_run / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    metrics = json.loads((text_run / "metrics.json").read_text())
    stored = metrics["validation"]["thresholds"]["per_label"]
    assert config["multi_label_thresholds"] == [stored["neg"], stored["pos"]]
    for split in ("validation", "test"):
        report = metrics[split]
        assert {"f1", "micro_f1", "samples_f1", "accuracy", "hamming_loss", "average_precision"} <= set(report)
        assert set(report["per_class"]) == {"neg", "pos"} and "majority_baseline" in report
    assert metrics["test"]["thresholds"]["tuned_on_this_split"] is False
    assert metrics["test"]["f1"] > metrics["test"]["majority_baseline"]["f1"]
    card = (text_run / "README.md").read_text()
    for expected in ("Hamming loss", "F1 (samples)", "top_k=None", "multi-label head", "pipeline_tag: text-classification"):
        assert expected in card


def test_pipeline_returns_every_labels_sigmoid_score_and_predict_the_set(text_run, tmp_path, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    text = "the movie was great but boring"
    scores = pipeline("text-classification", model=str(text_run))(text, top_k=None)
    assert {s["label"] for s in scores} == {"neg", "pos"}
    model = AutoModelForSequenceClassification.from_pretrained(text_run).eval()
    logits = model(**AutoTokenizer.from_pretrained(text_run)(text, return_tensors="pt")).logits[0]
    sigmoid = dict(zip(["neg", "pos"], torch.sigmoid(logits).tolist(), strict=True))
    assert {s["label"]: s["score"] for s in scores} == pytest.approx(sigmoid)
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(text_run), text, "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    thresholds = dict(zip(["neg", "pos"], model.config.multi_label_thresholds, strict=True))
    assert record["scores"] == pytest.approx(sigmoid, abs=1e-5)
    assert record["labels"] == [n for n, _ in sorted(sigmoid.items(), key=lambda p: -p[1]) if sigmoid[n] >= thresholds[n]]


def test_a_bare_model_folder_is_taken_for_its_multi_label_task(text_run):
    from hf_finetune.tasks import task_for_model

    config = json.loads((text_run / "config.json").read_text())
    assert task_for_model(config).name == "text-multi-label"
    assert task_for_model({**config, "problem_type": "single_label_classification"}).name == "text-classification"


def test_evaluate_reproduces_the_test_figures_at_the_stored_thresholds(text_run, capsys):
    run_test = json.loads((text_run / "metrics.json").read_text())["test"]
    from hf_finetune.finished.evaluate import evaluate_output

    evaluation = evaluate_output(text_run, output_dir=text_run.parent / "eval")
    assert evaluation.report["f1"] == pytest.approx(run_test["f1"], abs=1e-6)
    assert evaluation.report["hamming_loss"] == pytest.approx(run_test["hamming_loss"], abs=1e-6)


def test_export_to_onnx_matches_pytorch(text_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    shutil.copytree(text_run, run)
    assert main(["export", str(run), "--format", "onnx"]) == 0
    capsys.readouterr()
    text = "a wonderful film but dull"
    assert main(["predict", str(run), text]) == 0
    torch_line = capsys.readouterr().out
    assert main(["predict", str(run), "--onnx", text]) == 0
    assert capsys.readouterr().out.split("(")[0] == torch_line.split("(")[0]  # the same label set


def test_commands_it_does_not_serve_are_refused(text_run):
    from hf_finetune.combine.members import load_members
    from hf_finetune.errors import UserError
    from hf_finetune.tasks import check_capabilities

    for capability in ("ensemble", "soup"):
        with pytest.raises(UserError, match=f"task text-multi-label does not support {capability}"):
            load_members([text_run, text_run], capability=capability)
    recipe = validate_recipe(yaml.safe_load((text_run / "recipe.yaml").read_text()))
    with pytest.raises(RecipeError, match="task text-multi-label does not support rank"):
        check_capabilities(recipe, "rank")


def test_lora_trains_and_merges(tmp_path, tiny_bert):
    pytest.importorskip("peft")
    recipe = text_recipe(tmp_path, tiny_bert, files(tmp_path / "data"))
    recipe["finetune"] = {"strategy": "lora", "lora": {"r": 4}}
    result = hf_finetune.train(recipe)
    config = json.loads((result.output_dir / "config.json").read_text())
    assert len(config["multi_label_thresholds"]) == 2 and "f1" in result.metrics["test"]


def test_images_with_label_lists_train_end_to_end(tmp_path, tiny_resnet):
    from hf_finetune.testing import write_pattern_folder

    folder = write_pattern_folder(tmp_path / "patterns", {"train": 6, "validation": 3}, size=32)
    rows = {"train": [], "validation": []}
    for path in sorted(folder.rglob("*.png")):
        split, kind = path.parts[-3], path.parts[-2]
        labels = [kind] + (["odd"] if int(path.stem.split("_")[-1]) % 2 else [])
        rows[split].append({"image": str(path), "labels": labels})
    data = {}
    for split, items in rows.items():
        data[split] = str(tmp_path / f"{split}.jsonl")
        Path(data[split]).write_text("\n".join(json.dumps(r) for r in items))
    recipe = {"task": "image-multi-label", "model": {"name": str(tiny_resnet)},
              "data": {"files": data, "columns": {"label": "labels"}}, "training": dict(FAST),
              "output": {"dir": str(tmp_path / "out")}}
    result = hf_finetune.train(recipe)
    assert {"f1", "hamming_loss"} <= set(result.metrics["validation"])
    from transformers import AutoConfig, pipeline

    config = AutoConfig.from_pretrained(result.output_dir)
    assert config.problem_type == "multi_label_classification" and len(config.multi_label_thresholds) == 4
    scores = pipeline("image-classification", model=str(result.output_dir))(rows["validation"][0]["image"], top_k=None)
    assert {s["label"] for s in scores} == {"checkered", "horizontal", "odd", "vertical"}
    assert all(0 <= s["score"] <= 1 for s in scores) and sum(s["score"] for s in scores) != pytest.approx(1.0)


@pytest.mark.parametrize("finetune", [
    {"strategy": "probe_then_full", "probe_epochs": 0.5, "layer_decay": 0.8},
    {"strategy": "linear_probe", "cache_features": True},
    {"strategy": "gradual_unfreeze"},
])
def test_strategies_train(tmp_path, tiny_bert, finetune):
    recipe = text_recipe(tmp_path, tiny_bert, files(tmp_path / "data"))
    recipe["finetune"] = finetune
    result = hf_finetune.train(recipe)
    assert "f1" in result.metrics["test"] and result.metrics["test"]["thresholds"]["tuned_on_this_split"] is False


def test_tune_searches_on_macro_f1(tmp_path, tiny_bert):
    pytest.importorskip("optuna")
    recipe = text_recipe(tmp_path, tiny_bert, files(tmp_path / "data"))
    recipe["training"].update(max_steps=2, save_strategy="epoch", load_best_model_at_end=True)
    recipe["search"] = {"space": {"training.learning_rate": {"choices": [5e-3, 1e-3]}}, "trials": 2,
                        "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"}}
    assert main(["tune", str(write_recipe(tmp_path / "tune.yaml", recipe))]) == 0
    summary = json.loads((tmp_path / "out" / "best" / "search.json").read_text())
    assert summary["objective"]["metric"] == "validation f1" and summary["objective"]["direction"] == "maximize"
    assert "multi_label_thresholds" in json.loads((tmp_path / "out" / "best" / "config.json").read_text())
