"""Defaults that read the data: each decided for unset keys only, logged with its reason, recorded;
the majority-class baseline beside every score and the collapse guard."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from datasets import Dataset

from hf_finetune.cli import main
from hf_finetune.metrics.baseline import add_baselines, collapse_warning, majority_baseline
from hf_finetune.recipe import validate_recipe
from hf_finetune.training.data_aware import (
    CNN_LR,
    EVALUATE_FROM_EPOCH,
    MIN_OPTIMIZER_STEPS,
    PROBE_MIN_STEPS,
    apply_decisions,
    data_aware_defaults,
)

from .conftest import review_rows, write_csv, write_recipe


def _recipe(training=None, finetune=None, metrics=None, task="text-classification"):
    raw = {"task": task, "model": {"name": "m"}, "data": {"dataset": "d"}, "training": training or {}}
    if finetune:
        raw["finetune"] = finetune
    if metrics:
        raw["metrics"] = metrics
    return validate_recipe(raw)


def _train(counts):
    return Dataset.from_dict({"labels": [i for i, c in enumerate(counts) for _ in range(c)]})


class TinyText(torch.nn.Module):
    def __init__(self, params):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(params))


def _decided(recipe, counts, model=None, batch=8):
    return {d.key: d for d in data_aware_defaults(recipe, _train(counts), len(counts), model or TinyText(10), batch)}


def test_imbalanced_data_selects_on_f1_and_weights_classes():
    decided = _decided(_recipe(), [64, 32, 16, 8, 4])
    assert decided["training.metric_for_best_model"].value == "f1"
    assert "64 vs 4 training rows" in decided["training.metric_for_best_model"].reason
    assert decided["finetune.class_weights"].value == "balanced"
    balanced = _decided(_recipe(), [16, 16, 16])
    assert "training.metric_for_best_model" not in balanced and "finetune.class_weights" not in balanced
    mild = _decided(_recipe(), [30, 20])  # 1.5x: select on F1, but the loss needs no weights yet
    assert "training.metric_for_best_model" in mild and "finetune.class_weights" not in mild


def test_the_budget_follows_the_data_size():
    few = _decided(_recipe(), [8, 8, 8, 8, 8])  # 40 rows, batch 8: 5 steps an epoch
    assert few["training.num_train_epochs"].value == 20.0  # capped: 100 steps would need 20 epochs
    mid = _decided(_recipe(), [400, 400])  # 100 steps an epoch: the Trainer's 3 epochs
    assert mid["training.num_train_epochs"].value == 3.0
    assert f"at least {MIN_OPTIMIZER_STEPS}" in mid["training.num_train_epochs"].reason
    big = _decided(_recipe(), [30_000, 30_000])
    assert big["training.num_train_epochs"].value == 2.0


def test_a_regression_run_gets_more_steps_where_the_data_allows():
    # 600 rows at batch 8 are 75 steps an epoch: 3 epochs for classes, 5 (375 steps) for values
    assert _decided(_recipe(), [300, 300])["training.num_train_epochs"].value == 3.0
    scores = {d.key: d for d in data_aware_defaults(_recipe(task="text-regression"), _train([600]), 1,
                                                    TinyText(10), 8)}
    epochs = scores["training.num_train_epochs"]
    assert epochs.value == 5.0
    assert "375 steps (at least 375 where the data allows; regression: on two real" in epochs.reason
    large = data_aware_defaults(_recipe(task="text-regression"), _train([2_000]), 1, TinyText(10), 8)
    assert {d.key: d.value for d in large}["training.num_train_epochs"] == 3.0  # 750 steps already


def test_the_first_of_three_or_more_epochs_is_not_evaluated(tmp_path):
    decided = _decided(_recipe(), [400, 400])  # 3 epochs of 100 steps
    delay = decided["training.eval_delay"]
    assert delay.value == EVALUATE_FROM_EPOCH - 0.5 == 1.5  # the Trainer evaluates from epoch 2.0 on
    assert "3 epochs: the first is not evaluated (evaluations from epoch 2 on)" in delay.reason
    assert _decided(_recipe(), [8, 8, 8, 8, 8])["training.eval_delay"].value == 1.5  # 20 epochs
    # Kept: where an evaluation is all but the last (2 epochs), where evaluations are not per epoch or not at all,
    # where early stopping counts them, where a probe trains (cheap evaluations choose its epoch), where the recipe
    # sets its steps or its own delay, and where a callback reads every evaluation (tune's pruning, rank's pauses).
    assert "training.eval_delay" not in _decided(_recipe(), [30_000, 30_000])
    assert "training.eval_delay" not in _decided(_recipe(training={"num_train_epochs": 2}), [400, 400])
    for training in ({"eval_strategy": "steps", "eval_steps": 50, "save_strategy": "steps", "save_steps": 50},
                     {"eval_strategy": "no", "load_best_model_at_end": False}, {"max_steps": 300},
                     {"eval_delay": 0}):
        assert "training.eval_delay" not in _decided(_recipe(training=training), [400, 400]), training
    for finetune in ({"early_stopping_patience": 2}, {"strategy": "linear_probe"}):
        assert "training.eval_delay" not in _decided(_recipe(finetune=finetune), [400, 400]), finetune
    read = {d.key: d for d in data_aware_defaults(_recipe(), _train([400, 400]), 2, TinyText(10), 8,
                                                  evaluations_read=True)}
    assert read["training.eval_delay"].value == 0.0  # pinned: a trial's recipe.yaml trains the trial again
    assert "tune's pruning, rank's pauses" in read["training.eval_delay"].reason
    few = _decided(_recipe(), [64, 32, 16, 8, 4], SentenceEncoder(10))  # the data-aware probe: cheap evaluations
    assert few["finetune.strategy"].value == "linear_probe" and "training.eval_delay" not in few
    # self-training: a round that continues from its teacher starts trained
    pool = write_csv(tmp_path / "pool.csv", review_rows(4, seed=1))
    rounds = validate_recipe({"task": "text-classification", "model": {"name": "m"}, "self_training": {"rounds": 2},
                              "data": {"dataset": "d", "unlabeled": {"files": str(pool)}}})
    assert "training.eval_delay" not in _decided(rounds, [400, 400])
    assert _decided(_recipe(training={"num_train_epochs": 4}), [400, 400])["training.eval_delay"].value == 1.5


def _three_epochs(tmp_path, tiny_bert, out="out"):
    files = {"train": write_csv(tmp_path / "train.csv", review_rows(24, seed=3)),
             "validation": write_csv(tmp_path / "val.csv", review_rows(24, seed=4))}
    return {"task": "text-classification", "model": {"name": str(tiny_bert)},
            "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(tmp_path / "cache")},
            "training": {"num_train_epochs": 3, "per_device_train_batch_size": 8, "save_total_limit": 3},
            "output": {"dir": str(tmp_path / out)}}


def test_a_run_skips_the_first_epochs_evaluation(tmp_path, tiny_bert):
    recipe = _three_epochs(tmp_path, tiny_bert)
    assert main(["train", str(write_recipe(tmp_path / "recipe.yaml", recipe))]) == 0
    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert [e["epoch"] for e in log if "eval_loss" in e] == [2.0, 3.0]  # 3 steps an epoch
    resolved = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    assert resolved["training"]["eval_delay"] == 1.5
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["train"]["best_checkpoint"].endswith(("checkpoint-6", "checkpoint-9"))


def test_a_callback_that_reads_every_evaluation_keeps_the_first(tmp_path, tiny_bert):
    from transformers import TrainerCallback

    from hf_finetune.pipeline import run

    class Epochs(TrainerCallback):
        def __init__(self, every: bool):
            self.reads_every_evaluation, self.seen = every, []

        def on_evaluate(self, args, state, control, **kwargs):
            self.seen.append(state.epoch)

    reading, timing = Epochs(True), Epochs(False)  # tune's pruning and rank's pauses; a timer (benchmarks)
    run(validate_recipe(_three_epochs(tmp_path, tiny_bert, "a")), callbacks=[reading])
    run(validate_recipe(_three_epochs(tmp_path, tiny_bert, "b")), callbacks=[timing])
    assert reading.seen == [1.0, 2.0, 3.0] and timing.seen == [2.0, 3.0]
    from hf_finetune.search.trials import PauseAt, PruningCallback

    assert PruningCallback.reads_every_evaluation and PauseAt.reads_every_evaluation


def test_learning_rates_follow_the_backbone_and_the_recipe_wins():
    small = _decided(_recipe(), [10, 10], model=TinyText(22_000_000))
    assert small["training.learning_rate"].value == 1e-4 and "22M parameters" in small["training.learning_rate"].reason
    assert small["finetune.head_learning_rate"].value == pytest.approx(1e-3)
    assert small["training.warmup_steps"].value == 0.1
    base = _decided(_recipe(), [10, 10], model=TinyText(110_000_000))
    assert base["training.learning_rate"].value == 5e-5
    cnn = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3) for _ in range(3)], torch.nn.BatchNorm2d(3))
    vision = _decided(_recipe(task="image-classification"), [10, 10], model=cnn)
    assert vision["training.learning_rate"].value == CNN_LR
    # What the recipe says is never replaced; an explicit learning rate keeps warmup and head rate too.
    user = _decided(_recipe(training={"learning_rate": 3e-5, "num_train_epochs": 4}, finetune={
        "class_weights": [1, 1, 1, 1, 1]}), [64, 32, 16, 8, 4])
    assert not {"training.learning_rate", "training.num_train_epochs", "training.warmup_steps",
                "finetune.head_learning_rate", "finetune.class_weights"} & set(user)
    assert "training.metric_for_best_model" in user


def test_decisions_apply_to_a_copy_and_switch_off():
    recipe = _recipe()
    decisions = data_aware_defaults(recipe, _train([64, 4]), 2, TinyText(10), 8)
    applied = apply_decisions(recipe, decisions)
    assert applied.training["metric_for_best_model"] == "f1" and applied.training["greater_is_better"] is True
    assert applied.finetune.class_weights == "balanced"
    assert recipe.training["metric_for_best_model"] == "accuracy" and recipe.finetune.class_weights is None
    assert _recipe(finetune={"data_aware": False}).finetune.data_aware is False


def test_a_run_records_its_data_aware_defaults_and_the_reasons(tmp_path, tiny_bert, caplog):
    rows = review_rows(60, seed=3)
    rows = [r for r in rows if r["label"] == "pos"][:36] + [r for r in rows if r["label"] == "neg"][:6]
    files = {"train": write_csv(tmp_path / "train.csv", rows),
             "validation": write_csv(tmp_path / "val.csv", review_rows(12, seed=4))}
    recipe = {"task": "text-classification", "model": {"name": str(tiny_bert)},
              "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(tmp_path / "cache")},
              "training": {"max_steps": 4, "per_device_train_batch_size": 8},
              "output": {"dir": str(tmp_path / "out")}}
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    caplog.set_level("INFO")
    assert main(["train", str(path)]) == 0
    resolved = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    assert resolved["training"]["metric_for_best_model"] == "f1"
    pos, neg = sum(r["label"] == "pos" for r in rows), sum(r["label"] == "neg" for r in rows)
    assert neg == 6 and pos >= 3 * neg
    assert resolved["finetune"]["class_weights"]["neg"] == pytest.approx((pos + neg) / (2 * neg))
    assert resolved["training"]["warmup_steps"] == 0.1 and resolved["finetune"]["head_learning_rate"] == 1e-3
    assert f"Default from the data: training.metric_for_best_model = f1 (classes are imbalanced ({pos} vs 6" in caplog.text
    assert "Default from the data: preprocessing.max_length" in caplog.text
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["training"]["learning_rate"] == 1e-4  # a 20k-parameter BERT: the small-encoder rate


def _report(matrix, labels=("a", "b", "c"), f1=None):
    report = {"confusion_matrix": {"labels": list(labels), "matrix": matrix}}
    if f1 is not None:
        report["f1"] = f1
    return report


def test_the_majority_baseline_is_what_predicting_the_largest_class_scores():
    report = _report([[6, 0, 0], [0, 3, 0], [0, 0, 1]])
    baseline = majority_baseline(report, train_counts=[50, 30, 20])
    share = 6 / 10
    assert baseline["class"] == "a" and baseline["accuracy"] == pytest.approx(share)
    assert baseline["f1"] == pytest.approx((2 * share / (1 + share)) / 3)
    # Independent check: sklearn on the trivial predictions.
    from sklearn.metrics import f1_score

    truth = [0] * 6 + [1] * 3 + [2]
    assert baseline["f1"] == pytest.approx(f1_score(truth, [0] * 10, average="macro", zero_division=0))


def test_the_collapse_guard_fires_on_one_class_and_on_no_better_than_baseline():
    collapsed = _report([[6, 0, 0], [3, 0, 0], [1, 0, 0]], f1=0.25)
    warnings = add_baselines({"validation": collapsed}, [50, 30, 20])
    assert warnings and "predicts 'a' for 100% of the validation rows" in warnings[0]
    assert "finetune.class_weights: balanced" in warnings[0]
    healthy = _report([[5, 1, 0], [1, 2, 0], [0, 0, 1]], f1=0.78)
    assert add_baselines({"test": healthy}, [50, 30, 20]) == []
    weak = _report([[4, 1, 1], [2, 1, 0], [1, 0, 0]], f1=0.26)
    weak["majority_baseline"] = majority_baseline(weak, [50, 30, 20])
    assert "no better than always predicting 'a'" in collapse_warning(weak, "test")
    assert np.isclose(weak["majority_baseline"]["accuracy"], 0.6)


def test_the_collapse_guard_fires_on_no_better_than_guessing():
    """Issue #34's first few-label run: macro-F1 0.218 on 3 sentiment classes, above the majority's 0.167 by more
    than the margin, below guessing's 0.33, and no warning said so."""
    from sklearn.metrics import f1_score

    from hf_finetune.metrics.baseline import guessing_baseline

    balanced = [[2, 1, 1], [1, 2, 1], [2, 1, 1]]  # 12 rows, 4 of each class
    guess = guessing_baseline(_report(balanced), [10, 10, 10])
    assert guess == {"accuracy": pytest.approx(1 / 3), "f1": pytest.approx(1 / 3)}
    # Against draws of the guesser itself: its mean macro-F1 is near the expectation (a little below it).
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], 4)
    draws = [f1_score(truth, rng.integers(0, 3, 12), average="macro", zero_division=0) for _ in range(2000)]
    assert 0.25 < np.mean(draws) <= guess["f1"] + 0.01
    weak = _report(balanced, f1=0.218)
    [warning] = add_baselines({"test": weak}, [10, 10, 10])
    assert weak["majority_baseline"]["f1"] == pytest.approx(1 / 6)
    assert ("scores macro-F1 0.218 on test, no better than guessing each row's class from the training "
            "frequencies (0.333): it has not learned the task") in warning
    assert add_baselines({"test": _report([[3, 1, 0], [0, 4, 0], [1, 0, 3]], f1=0.83)}, [10, 10, 10]) == []
    # Skewed classes: guessing at the training shares, per class F1 2pq/(p+q).
    skewed = guessing_baseline(_report([[8, 0], [2, 0]], labels=("a", "b")), [90, 10])
    assert skewed["f1"] == pytest.approx((2 * 0.8 * 0.9 / 1.7 + 2 * 0.2 * 0.1 / 0.3) / 2)


class SentenceEncoder(TinyText):
    """A text model that ends in the mean-pooling layer (models/pooling.py), as a sentence encoder's does."""

    def __init__(self, params):
        super().__init__(params)
        from types import SimpleNamespace

        self.config = SimpleNamespace(hf_finetune_pooling={"mode": "mean", "layer": 6})


def test_few_labels_on_a_sentence_encoder_train_a_probe_on_cached_features():
    from hf_finetune.training.data_aware import PROBE_LR, PROBE_MAX_EPOCHS

    decided = _decided(_recipe(), [64, 32, 16, 8, 4], SentenceEncoder(10))  # 124 rows, 25 per class
    assert decided["finetune.strategy"].value == "linear_probe"
    assert "25 per class" in decided["finetune.strategy"].reason
    assert decided["finetune.cache_features"].value is True
    assert decided["training.learning_rate"].value == PROBE_LR
    assert "finetune.head_learning_rate" not in decided  # the head is all that trains
    assert decided["training.num_train_epochs"].value == float(-(-PROBE_MIN_STEPS // 16))  # 16 steps an epoch
    assert decided["finetune.class_weights"].value == "balanced"  # a probe's loss is weighted too
    assert _decided(_recipe(), [2, 2], SentenceEncoder(10))["training.num_train_epochs"].value == PROBE_MAX_EPOCHS
    # enough labels, a [CLS] model, or a recipe that asks for fine-tuning: no probe
    assert "finetune.strategy" not in _decided(_recipe(), [40, 40], SentenceEncoder(10))
    assert "finetune.strategy" not in _decided(_recipe(), [16, 16])
    for finetune in ({"strategy": "full"}, {"head_learning_rate": 1e-3}, {"layer_decay": 0.9}):
        decided = _decided(_recipe(finetune=finetune), [16, 16], SentenceEncoder(10))
        assert "finetune.strategy" not in decided and decided["training.learning_rate"].value != PROBE_LR
    pairs = validate_recipe({"task": "text-classification", "model": {"name": "m"},
                             "data": {"dataset": "d", "columns": {"text": "a", "text_pair": "b"}}})
    assert "finetune.strategy" not in _decided(pairs, [16, 16], SentenceEncoder(10))
    user_rate = _decided(_recipe(training={"learning_rate": 3e-3}), [16, 16], SentenceEncoder(10))
    assert user_rate["finetune.strategy"].value == "linear_probe" and "training.learning_rate" not in user_rate


def test_pseudo_labels_do_not_count_toward_the_probe_rule():
    # 16 labelled rows a class, then 100 pseudo-labels a class (self-training's round 1): judged on every row,
    # 116 a class would fine-tune; the pseudo-labels are the teacher's, so the labelled rows decide.
    train = Dataset.from_dict({"labels": [0] * 16 + [1] * 16 + [0] * 100 + [1] * 100})
    decided = {d.key: d for d in data_aware_defaults(_recipe(), train, 2, SentenceEncoder(10), 8, pseudo_rows=200)}
    assert decided["finetune.strategy"].value == "linear_probe"
    assert "32 labelled training rows (the 200 pseudo-labels not counted)" in decided["finetune.strategy"].reason
    assert decided["training.num_train_epochs"].value == float(-(-PROBE_MIN_STEPS // 29))  # 29 steps of all 232
    assert "finetune.strategy" not in {d.key for d in data_aware_defaults(_recipe(), train, 2, SentenceEncoder(10), 8)}


def test_the_probe_k_fold_judges_the_labelled_rows_only():
    # 16 labelled rows a class whose features carry no label, then 48 pseudo-labels a class that the teacher's
    # features separate perfectly: read with them, the k-fold would call for the probe
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 16 + [0] * 48 + [1] * 48)
    vectors = rng.normal(size=(len(labels), 8)).astype(np.float32)
    vectors[32:, 0] = np.where(labels[32:] == 0, -5.0, 5.0)
    train = Dataset.from_dict({"labels": labels.tolist()})

    def decided(rows):
        # one weight decay and batches of 64: the k-folds' 4 schedules train in a few steps each
        return {d.key: d for d in data_aware_defaults(
            _recipe({"weight_decay": 0.0}), train, 2, SentenceEncoder(10), 64, np.array([1, 1]),
            lambda: (torch.from_numpy(vectors[:rows]), labels[:rows]), pseudo_rows=rows - 32)}

    noise = decided(128)["finetune.strategy"]
    assert noise.value == "full" and "(the labelled rows only): below 0.8" in noise.reason
    vectors[:32, 0] = np.where(labels[:32] == 0, -5.0, 5.0)  # labelled rows that separate: the probe, as in round 0
    separable = decided(128)
    assert separable["finetune.strategy"].value == "linear_probe"
    assert "(the labelled rows only), at least 0.8" in separable["finetune.strategy"].reason
    assert "training.num_train_epochs" in separable  # chosen by a k-fold on all 128 rows


def test_a_few_label_run_on_a_sentence_encoder_is_a_cached_probe_that_pipeline_loads(text_recipe, tiny_bert, tmp_path):
    import shutil

    from transformers import pipeline

    from hf_finetune import train
    from hf_finetune.testing import write_sentence_transformers_config

    st = write_sentence_transformers_config(shutil.copytree(tiny_bert, tmp_path / "st"), "mean")
    recipe = {**text_recipe, "model": {"name": str(st)},
              "training": {k: v for k, v in text_recipe["training"].items() if k != "learning_rate"}}
    recipe["training"]["num_train_epochs"] = 3
    result = train(recipe)
    resolved = yaml.safe_load((result.output_dir / "recipe.yaml").read_text())
    assert resolved["finetune"]["strategy"] == "linear_probe" and resolved["finetune"]["cache_features"] is True
    assert resolved["training"]["learning_rate"] == 1e-2 and resolved["model"]["pooling"] == "mean"
    classify = pipeline("text-classification", model=str(result.output_dir), device="cpu")
    test_rows = review_rows(16, seed=2)
    predicted = [r["label"] for r in classify([row["text"] for row in test_rows])]
    accuracy = np.mean([p == row["label"] for p, row in zip(predicted, test_rows, strict=True)])
    assert accuracy == pytest.approx(result.metrics["test"]["accuracy"], abs=1 / 16)  # cached = the saved model


def test_max_length_covers_the_texts_and_stops_at_the_cap(tmp_path, tiny_bert):
    from transformers import AutoTokenizer

    from hf_finetune import load_recipe
    from hf_finetune.tasks.text_length import LENGTH_CAP, measured_max_length

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    short = review_rows(40, seed=5)
    long = [{"text": " ".join([r["text"]] * 40), "label": r["label"]} for r in short]  # ~200 words each

    def chosen(rows):
        files = {"train": str(write_csv(tmp_path / f"{len(rows[0]['text'])}.csv", rows))}
        recipe = load_recipe({"task": "text-classification", "model": {"name": str(tiny_bert)},
                              "data": {"files": files}, "output": {"dir": str(tmp_path / "out")}})
        return measured_max_length(recipe, tokenizer, limit=512)

    value, reason = chosen(short)
    assert value < LENGTH_CAP and value % 8 == 0 and "capped" not in reason and "100% of 40" in reason
    value, reason = chosen(long)
    assert value == LENGTH_CAP == 128
    assert "0% of 40 sampled training texts fit in 128 tokens" in reason
    assert "capped at 128" in reason and "set preprocessing.max_length to keep more" in reason


def test_a_validation_too_small_to_choose_an_epoch_keeps_the_last_one():
    # 9 validation rows of the rarest class: an epoch chosen on them is noise (on BBC News at 16 per class,
    # 8 carved rows, it cost 0.10 test macro-F1: benchmarks/equal_settings.py)
    few = {d.key: d for d in data_aware_defaults(_recipe(), _train([400, 400]), 2, TinyText(10), 8,
                                                   validation_counts=np.array([30, 9]))}
    assert few["training.load_best_model_at_end"].value is False
    assert few["training.load_best_model_at_end"].reason.startswith("validation holds 9 rows of a class (fewer than 10)")
    enough = {d.key for d in data_aware_defaults(_recipe(), _train([400, 400]), 2, TinyText(10), 8,
                                                  validation_counts=np.array([30, 10]))}
    assert "training.load_best_model_at_end" not in enough
    asked = {d.key for d in data_aware_defaults(_recipe({"load_best_model_at_end": True}), _train([400, 400]), 2,
                                                TinyText(10), 8, validation_counts=np.array([1, 1]))}
    assert "training.load_best_model_at_end" not in asked  # the recipe's own value wins
    stops = {d.key for d in data_aware_defaults(_recipe(finetune={"early_stopping_patience": 2}), _train([400, 400]),
                                                2, TinyText(10), 8, validation_counts=np.array([1, 1]))}
    assert "training.load_best_model_at_end" not in stops  # early stopping selects on validation: asked for
    scores = {d.key for d in data_aware_defaults(_recipe(task="text-regression"), _train([800]), 1, TinyText(10),
                                                 8, validation_counts=np.array([1]))}
    assert "training.load_best_model_at_end" not in scores  # no classes of rows to count


def test_a_carved_validation_of_a_few_rows_keeps_the_last_epoch_or_warns(tmp_path, tiny_bert, caplog):
    files = {"train": write_csv(tmp_path / "train.csv", review_rows(40, seed=3))}  # carved: 4 validation rows
    recipe = {"task": "text-classification", "model": {"name": str(tiny_bert)},
              "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(tmp_path / "cache")},
              "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 1e-3},
              "output": {"dir": str(tmp_path / "out")}}
    caplog.set_level("INFO")
    assert main(["train", str(write_recipe(tmp_path / "recipe.yaml", recipe))]) == 0
    resolved = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    assert resolved["training"]["load_best_model_at_end"] is False
    assert "Default from the data: training.load_best_model_at_end = False (validation holds 2 rows" in caplog.text
    assert "the kept epoch is chosen on noise" not in caplog.text
    caplog.clear()
    recipe = {**recipe, "finetune": {"data_aware": False}, "output": {"dir": str(tmp_path / "off")}}
    assert main(["train", str(write_recipe(tmp_path / "off.yaml", recipe))]) == 0
    assert yaml.safe_load((tmp_path / "off" / "recipe.yaml").read_text())["training"]["load_best_model_at_end"] is True
    assert ("training.load_best_model_at_end: the validation split holds 2 rows of a class (fewer than 10), so the "
            "kept epoch is chosen on noise") in caplog.text
