"""The few-label rules on their own: the probe schedule chosen by k-fold (training/few_label.py), when
data-aware defaults use it instead of a validation of a few rows, and self-training's relative top share."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_finetune.recipe import validate_recipe
from hf_finetune.selftrain.select import select_pseudo_labels, top_share_curve, top_share_mask
from hf_finetune.training.data_aware import data_aware_defaults
from hf_finetune.training.few_label import (
    KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS,
    choose_probe_schedule,
    fold_count,
    macro_f1,
    stratified_folds,
)


def test_stratified_folds_hold_every_row_once_and_every_class_in_each_fold():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 9)
    folds = stratified_folds(labels, fold_count(labels), seed=3)
    assert len(folds) == 5  # the rarest class has 5 rows
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(labels)))
    assert all(set(labels[f].tolist()) == {0, 1, 2} for f in folds)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert fold_count(np.array([0, 0, 1, 1, 1])) == 2 and fold_count(np.array([0] * 40 + [1] * 40)) == 5


def test_macro_f1_matches_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    truth, predicted = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    predicted[predicted == 3] = 2  # a class never predicted counts as 0
    assert macro_f1(truth, predicted, 4) == pytest.approx(f1_score(truth, predicted, average="macro"))


def _blobs(per_class: int, classes: int, spread: float, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, 16))
    labels = np.repeat(np.arange(classes), per_class)
    return torch.tensor(centres[labels] + rng.normal(0, spread, (len(labels), 16)), dtype=torch.float32), labels


def test_k_fold_chooses_a_schedule_that_learns_and_scores_noise_near_chance():
    features, labels = _blobs(8, 3, spread=0.3)
    # A small rate: 1 epoch barely moves the head from its start, more epochs separate the classes.
    choice = choose_probe_schedule(features, labels, 3, lr=3e-3, batch_size=8, warmup_share=0.1,
                                   epochs=(1, 40), weight_decays=(0.0,))
    assert choice.epochs == 40 and choice.score > 0.9 and choice.folds == 5
    scores = {(e, d): s for e, d, s in choice.table}
    assert scores[(1, 0.0)] < scores[(40, 0.0)]
    assert "5-fold cross-validation on the training rows chose 40 epochs" in choice.describe()
    again = choose_probe_schedule(features, labels, 3, lr=3e-3, batch_size=8, warmup_share=0.1,
                                  epochs=(1, 40), weight_decays=(0.0,))
    assert again == choice  # seeded: the same rows give the same choice
    noise = torch.randn(48, 16, generator=torch.Generator().manual_seed(1))
    chance = choose_probe_schedule(noise, np.arange(48) % 3, 3, lr=1e-2, batch_size=8, warmup_share=0.1,
                                   epochs=(10,), weight_decays=(0.0,))
    assert chance.score < 0.6


class SentenceEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(10))
        self.config = SimpleNamespace(hf_finetune_pooling={"mode": "mean", "layer": 6})


def _decide(validation_counts, training=None, counts=(12, 12, 12), spread=0.3):
    recipe = validate_recipe({"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"},
                              "training": training or {}})
    train = Dataset.from_dict({"labels": [i for i, c in enumerate(counts) for _ in range(c)]})
    calls = []

    def features():
        calls.append(1)
        return _blobs(counts[0], len(counts), spread=spread)

    decided = data_aware_defaults(recipe, train, len(counts), SentenceEncoder(), 8,
                                  None if validation_counts is None else np.array(validation_counts), features)
    return {d.key: d for d in decided}, len(calls)


def test_a_probe_with_a_tiny_validation_takes_its_schedule_from_k_fold():
    decided, calls = _decide([1, 2, 1])
    assert calls == 1 and decided["finetune.strategy"].value == "linear_probe"
    epochs = decided["training.num_train_epochs"]
    assert "validation holds 1 row of a class (fewer than 10)" in epochs.reason
    assert "cross-validation on the training rows chose" in epochs.reason
    assert decided["training.load_best_model_at_end"].value is False
    assert decided["training.weight_decay"].value in (0.0, 1.0, 3.0)
    # enough validation rows: the k-fold still reads the task (the probe stays), but validation selects the epoch
    decided, calls = _decide([10, 10, 10])
    assert calls == 1 and decided["finetune.strategy"].value == "linear_probe"
    assert "at least 0.8: the frozen embeddings separate the classes" in decided["finetune.strategy"].reason
    assert "training.load_best_model_at_end" not in decided
    assert "cross-validation" not in decided["training.num_train_epochs"].reason
    # epochs set by the recipe: no k-fold at all, and still no epoch chosen on 1 row a class
    decided, calls = _decide([1, 1, 1], {"num_train_epochs": 4})
    assert calls == 0 and decided["training.load_best_model_at_end"].value is False
    assert decided["training.load_best_model_at_end"].reason.startswith("validation holds 1 row of a class")
    assert decided["finetune.strategy"].value == "linear_probe"
    # a recipe's own weight decay is held, not chosen
    decided, _ = _decide([1, 1, 1], {"weight_decay": 0.05})
    assert "training.weight_decay" not in decided and "decay 0.05" in decided["training.num_train_epochs"].reason
    assert KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS == 10


def test_top_share_keeps_each_classs_surest_rows_whatever_their_probability():
    probs = np.array([[0.55, 0.45], [0.60, 0.40], [0.52, 0.48], [0.45, 0.55], [0.40, 0.60], [0.58, 0.42]])
    # class 0 predicted for rows 0, 1, 2, 5 (top half: rows 1 and 5); class 1 for rows 3, 4 (top half: row 4)
    assert np.flatnonzero(top_share_mask(probs, 0.5)).tolist() == [1, 4, 5]
    assert top_share_mask(probs, 0.01).sum() == 2  # at least one row of each predicted class
    fixed = select_pseudo_labels(probs, np.array([0.9, 0.9]), None)
    assert fixed.kept == 0  # a modest teacher never reaches 0.9
    relative = select_pseudo_labels(probs, np.array([0.9, 0.9]), None, top_share=0.5)
    assert relative.indices.tolist() == [1, 4, 5] and relative.labels.tolist() == [0, 1, 0]
    curve = top_share_curve(probs, np.array([0, 0, 1, 1, 1, 0]))
    assert [p["kept"] for p in curve] == [2, 2, 2, 3, 6]  # shares 0.1..1.0: round(share x rows), at least 1
    assert curve[-1]["accuracy"] == pytest.approx(5 / 6)


def test_the_default_top_share_is_off_once_a_threshold_is_set():
    from hf_finetune.recipe.sections.self_training import DEFAULT_TOP_SHARE, SelfTraining

    assert SelfTraining().resolved_top_share() == DEFAULT_TOP_SHARE
    assert SelfTraining(threshold=0.7).resolved_top_share() is None
    assert SelfTraining(threshold=0.7, top_share=0.3).resolved_top_share() == 0.3
    assert SelfTraining(top_share=0.1).resolved_top_share() == 0.1


def test_top_share_outside_zero_one_is_a_recipe_error(text_recipe):
    from hf_finetune import load_recipe
    from hf_finetune.errors import RecipeError

    recipe = {**text_recipe, "data": {**text_recipe["data"], "unlabeled": {"files": text_recipe["data"]["files"]["test"]}},
              "self_training": {"top_share": 1.5}}
    with pytest.raises(RecipeError, match=r"self_training\.top_share"):
        load_recipe(recipe)


def test_classes_the_frozen_features_do_not_separate_fine_tune_the_encoder():
    from hf_finetune.training.data_aware import FINE_TUNE_BELOW_PROBE_F1, PROBE_LR

    decided, calls = _decide([1, 1, 1], spread=30.0)  # the class centres drown in noise: k-fold near chance
    assert calls == 1 and decided["finetune.strategy"].value == "full"
    assert f"below {FINE_TUNE_BELOW_PROBE_F1}, the frozen embeddings do not separate these classes" in \
        decided["finetune.strategy"].reason
    assert "finetune.cache_features" not in decided and decided["training.learning_rate"].value != PROBE_LR
    assert decided["training.load_best_model_at_end"].value is False  # 1 validation row a class: the last epoch
    assert "finetune.head_learning_rate" in decided and "training.weight_decay" not in decided
    decided, _ = _decide([12, 12, 12], spread=30.0)
    assert decided["finetune.strategy"].value == "full" and "training.load_best_model_at_end" not in decided
