"""Self-training: pseudo-label selection, recipe and pool errors, and rounds end to end on tiny models."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from hf_finetune.errors import DataError, RecipeError
from hf_finetune.recipe.sections.self_training import DEFAULT_MAX_PER_LABELLED
from hf_finetune.selftrain.rounds import improves
from hf_finetune.selftrain.select import accuracy, class_thresholds, select_pseudo_labels, share_cap

from .conftest import review_rows, write_csv

# --- selection -------------------------------------------------------------------------------------


def test_threshold_filters_per_predicted_class():
    probs = np.array([[0.95, 0.05], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9], [0.5, 0.5]])
    sel = select_pseudo_labels(probs, np.array([0.9, 0.9]), None)
    assert sel.indices.tolist() == [0, 3] and sel.labels.tolist() == [0, 1]
    # A lower threshold for class 1 only: row 2 (0.7 for class 1) joins, row 1 (0.6 for class 0) does not.
    sel = select_pseudo_labels(probs, np.array([0.9, 0.7]), None)
    assert sel.indices.tolist() == [0, 2, 3] and sel.kept_per_class.tolist() == [1, 2]
    # A threshold of exactly the probability keeps the row; 1.0 keeps only certain rows.
    assert select_pseudo_labels(probs, np.array([0.95, 1.0]), None).indices.tolist() == [0]


def test_class_thresholds_name_labels():
    assert class_thresholds(["a", "b", "c"], 0.9, {"b": 0.5}).tolist() == [0.9, 0.5, 0.9]
    with pytest.raises(DataError, match=r"self_training.class_thresholds: 'd' is not a label; labels: a, b, c"):
        class_thresholds(["a", "b", "c"], 0.9, {"d": 0.5})


def test_share_cap_keeps_each_class_under_its_share():
    assert share_cap(np.array([90, 5, 5]), 0.5) == 10  # 10 of 10 + 5 + 5 = 50%
    assert share_cap(np.array([90, 5, 5]), 1.0) == 90
    assert share_cap(np.array([30, 30, 30]), 0.34) == 30  # balanced already: nothing is cut
    assert share_cap(np.array([100, 0]), 0.5) == 0  # one class alone can never be at most half
    for counts, share in (([50, 20, 7, 1], 0.4), ([13, 13, 2], 0.45), ([1000, 3, 3, 3, 3], 0.25)):
        cap = share_cap(np.array(counts), share)
        kept = np.minimum(counts, cap)
        assert kept.max() <= share * kept.sum() + 1e-9
        more = np.minimum(counts, cap + 1)
        assert cap == max(counts) or more.max() > share * more.sum()  # the largest such cap


def test_class_share_cap_keeps_the_most_confident():
    probs = np.array([[0.91, 0.09], [0.99, 0.01], [0.95, 0.05], [0.97, 0.03], [0.08, 0.92]])
    sel = select_pseudo_labels(probs, np.array([0.9, 0.9]), 0.5)
    # 4 confident rows of class 0 and 1 of class 1: at most half each, so class 0 keeps its single most confident.
    assert sel.confident_per_class.tolist() == [4, 1]
    assert sel.kept_per_class.tolist() == [1, 1] and sel.indices.tolist() == [1, 4]
    sel = select_pseudo_labels(probs, np.array([0.9, 0.9]), 0.75)
    assert sel.indices.tolist() == [1, 2, 3, 4]  # 3 of 4: the 0.91 row goes


def test_class_caps_keep_the_most_confident_before_the_share_cap():
    probs = np.array([[0.91, 0.09], [0.99, 0.01], [0.95, 0.05], [0.97, 0.03], [0.08, 0.92], [0.3, 0.7]])
    # class 0 may keep 2 rows (of its 4 confident), class 1 both of its rows (every row is in its top share)
    sel = select_pseudo_labels(probs, np.array([0.9, 0.9]), None, top_share=1.0, class_caps=np.array([2, 5]))
    assert sel.confident_per_class.tolist() == [4, 2] and sel.indices.tolist() == [1, 3, 4, 5]
    # the share cap then counts what the class caps left: 2 + 2, so half each needs no cut
    assert select_pseudo_labels(probs, np.array([0.9, 0.9]), 0.5, 1.0, np.array([2, 5])).indices.tolist() == [1, 3, 4, 5]
    assert select_pseudo_labels(probs, np.array([0.9, 0.9]), None, class_caps=np.array([0, 1])).indices.tolist() == [4]


def test_caps_by_labelled_rows_name_what_they_shut_out(caplog):
    from hf_finetune.selftrain.rounds import pseudo_label_caps

    names = ["a", "b", "c"]
    assert pseudo_label_caps(None, np.array([8, 7, 0]), names, 240) is None
    assert pseudo_label_caps(2.0, np.array([8, 7, 0]), names, 240).tolist() == [16, 14, 0]
    assert "c has no labelled training row, so no pseudo-label either" in caplog.text
    assert pseudo_label_caps(0.5, np.array([8, 7, 2]), names, 240).tolist() == [4, 3, 1]  # floor
    assert pseudo_label_caps(1e20, np.array([8, 7, 2]), names, 240).tolist() == [240, 240, 240]  # no overflow
    with pytest.raises(DataError, match=r"self_training.max_per_labelled: 0.1 x the labelled rows of 'b' \(7\), "
                                        r"'c' \(2\) is below one pseudo-label: that class could never be"):
        pseudo_label_caps(0.1, np.array([10, 7, 2]), names, 240)


def test_accuracy_ignores_unknown_truth_and_improvement_rule():
    assert accuracy(np.array([0, 1, 1]), np.array([0, 0, -1])) == (0.5, 2)
    assert accuracy(np.array([0]), np.array([-1])) == (None, 0)
    assert improves(0.81, 0.80, greater=True, min_improvement=0.0)
    assert not improves(0.80, 0.80, greater=True, min_improvement=0.0)
    assert not improves(0.805, 0.80, greater=True, min_improvement=0.01)
    assert improves(0.4, 0.5, greater=False, min_improvement=0.0)


# --- recipe and pool errors --------------------------------------------------------------------------


@pytest.fixture
def pool_file(tmp_path):
    """Unlabelled reviews with their true labels (used only for scoring) and a column training never reads."""
    rows = [dict(r, note="x") for r in review_rows(60, seed=5)]
    return write_csv(tmp_path / "data" / "pool.csv", rows)


@pytest.fixture
def st_recipe(text_recipe, pool_file, tmp_path):
    recipe = copy.deepcopy(text_recipe)
    # 12 validation rows per class: enough to compare rounds on (below 10, every round runs and the last is kept)
    recipe["data"]["files"]["validation"] = str(write_csv(tmp_path / "data" / "validation24.csv", review_rows(24, seed=1)))
    recipe["data"]["unlabeled"] = {"files": str(pool_file)}
    recipe["self_training"] = {"rounds": 2, "threshold": 0.6}
    recipe["training"].update(num_train_epochs=3, save_strategy="epoch", eval_strategy="epoch")
    return recipe


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5])
def test_threshold_outside_zero_one_is_a_recipe_error(st_recipe, threshold):
    from hf_finetune import load_recipe

    st_recipe["self_training"]["threshold"] = threshold
    with pytest.raises(RecipeError, match=r"self_training\.threshold: input should be (greater than 0|less than or "
                                          r"equal to 1)"):
        load_recipe(st_recipe)


def test_recipe_errors_name_the_keys(st_recipe):
    from hf_finetune import load_recipe

    bad = copy.deepcopy(st_recipe)
    bad["self_training"]["class_thresholds"] = {"pos": 1.2}
    bad["data"]["unlabeled"]["split"] = "train"
    with pytest.raises(RecipeError) as info:
        load_recipe(bad)
    text = str(info.value)
    assert "self_training.class_thresholds: the threshold of 'pos' must be in (0, 1], got 1.2" in text
    assert "data.unlabeled: give one source, not data.unlabeled.files and data.unlabeled.split" in text
    assert "data.unlabeled.split: 'train' is also data.splits.train" in text

    no_pool = copy.deepcopy(st_recipe)
    del no_pool["data"]["unlabeled"]
    with pytest.raises(RecipeError, match=r"data.unlabeled: required by self_training"):
        load_recipe(no_pool)
    no_rounds = copy.deepcopy(st_recipe)
    del no_rounds["self_training"]
    with pytest.raises(RecipeError, match=r"data.unlabeled: is only used by self-training"):
        load_recipe(no_rounds)
    missing = copy.deepcopy(st_recipe)
    missing["data"]["unlabeled"]["files"] = "nowhere/pool.csv"
    with pytest.raises(RecipeError, match=r"data.unlabeled.files: file not found: nowhere/pool.csv"):
        load_recipe(missing)


@pytest.mark.parametrize("short", ["path", "list"])
def test_the_pool_may_be_given_as_its_files(st_recipe, pool_file, short):
    """`data.unlabeled: pool.csv` (or a list of files) is the short form of `data.unlabeled: {files: ...}`."""
    from hf_finetune import load_recipe

    st_recipe["data"]["unlabeled"] = str(pool_file) if short == "path" else [str(pool_file)]
    recipe = load_recipe(st_recipe)
    assert recipe.data.unlabeled.files == [str(pool_file)]
    assert recipe.to_dict()["data"]["unlabeled"]["files"] == [str(pool_file)]
    st_recipe["data"]["unlabeled"] = 3
    with pytest.raises(RecipeError, match=r"data.unlabeled: must be a section \(a mapping of keys\), got 3 \(int\); "
                                          r"or the pool's files: data.unlabeled: pool.csv"):
        load_recipe(st_recipe)


def test_pool_errors_name_file_and_column(st_recipe, tmp_path):
    from hf_finetune import load_recipe
    from hf_finetune.selftrain.pool import load_pool

    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    st_recipe["data"]["unlabeled"] = {"files": str(empty)}
    with pytest.raises(DataError, match=rf"data.unlabeled.files: {empty} holds no rows"):
        load_pool(load_recipe(st_recipe))

    other = write_csv(tmp_path / "other.csv", [{"review": "good film"}])
    st_recipe["data"]["unlabeled"] = {"files": str(other)}
    with pytest.raises(DataError, match=r"data.unlabeled.files: column 'text' \(data.columns.text\) not found in the "
                                        rf"unlabelled pool \({other}; columns: review\)"):
        load_pool(load_recipe(st_recipe))

    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"text": " "}\n{"text": ""}\n')
    st_recipe["data"]["unlabeled"] = {"files": str(blank)}
    with pytest.raises(DataError, match=r"every row of the unlabelled pool .* has an empty text: the pool is empty"):
        load_pool(load_recipe(st_recipe))


def test_pool_label_column_is_kept_apart(st_recipe, pool_file):
    from hf_finetune import load_recipe
    from hf_finetune.data.labels import LabelSpace
    from hf_finetune.preflight import preflight
    from hf_finetune.selftrain.pool import load_pool, truth_ids

    report = preflight(load_recipe(st_recipe))  # what `hf-finetune check` prints
    assert report.splits["unlabeled"] == (f"60 unlabelled rows from {pool_file} (60 with a label column: only to "
                                          "score the pseudo-labels)")
    pool = load_pool(load_recipe(st_recipe))
    assert set(pool.rows.column_names) == {"text", "__source_file__"}  # no label, no stray column
    ids = truth_ids(pool, LabelSpace(("neg", "pos"), ("neg", "pos")))
    assert ids.tolist()[:4] == [0, 1, 0, 1]
    with pytest.raises(DataError, match=r"data.columns.label: the unlabelled pool .* has label 'neg' \(row 0\)"):
        truth_ids(pool, LabelSpace(("bad", "good"), ("bad", "good")))
    # Integer labels in a pool file match class names that are digits (an image folder's classes 0..9).
    pool.truth = [7, 0, None]
    assert truth_ids(pool, LabelSpace(tuple("0123456789"), tuple("0123456789"))).tolist() == [7, 0, -1]


# --- end to end ----------------------------------------------------------------------------------------


def script_validation(monkeypatch, accuracies):
    """Each round trains for real, but reports the next of `accuracies` as its validation accuracy."""
    from hf_finetune.selftrain import rounds as rounds_module

    scripted = iter(accuracies)
    real_train_round = rounds_module._train_round

    def scripted_round(*args, **kwargs):
        done = real_train_round(*args, **kwargs)
        done.record["validation"]["accuracy"] = next(scripted)
        return done

    monkeypatch.setattr(rounds_module, "_train_round", scripted_round)


def test_text_rounds_records_and_best_round(st_recipe, pool_file, monkeypatch):
    """Three rounds train for real; their selection metric is scripted (0.5, 0.7, 0.6), so round 1 must be
    published and round 2 must stop the run."""
    import hf_finetune
    script_validation(monkeypatch, [0.5, 0.7, 0.6])
    st_recipe["self_training"].update(rounds=5, threshold=0.99, class_thresholds={"neg": 0.5}, init="continue",
                                      score_test_each_round=True)
    st_recipe["training"].update(num_train_epochs=8, per_device_train_batch_size=8, learning_rate=5e-3,
                                 warmup_steps=0.1)
    result = hf_finetune.train(st_recipe)
    metrics = result.metrics
    st = metrics["self_training"]
    rounds = st["rounds"]
    assert st["metric"] == "accuracy" and st["pool"]["rows"] == 60 and st["pool"]["labelled_rows"] == 60
    assert [r["round"] for r in rounds] == [0, 1, 2] and all(r["trained"] for r in rounds)
    assert rounds[0]["kept"] == 0 and rounds[0]["train_rows"] == 48
    for r in rounds[1:]:
        # Every prediction is above 0.5: 'neg' rows pass their own threshold, 'pos' ones cannot reach 0.99.
        assert r["pool_rows"] == 60 and r["kept_per_class"]["pos"] == 0 and 0 < r["kept_per_class"]["neg"] < 60
        assert r["kept_per_class"]["neg"] == r["kept"] == r["confident"]
        assert r["train_rows"] == 48 + r["kept"]
        assert 0 <= r["pseudo_label_accuracy"] <= 1 and r["scored_rows"] == r["kept"]
        curve = {p["threshold"]: p["kept"] for p in r["threshold_curve"]}
        assert curve[0.5] == 60 and curve[0.99] <= curve[0.6] <= curve[0.5]
        assert "test" in r and "f1" in r["validation"]
    assert [r.get("improved") for r in rounds] == [None, True, False]
    assert st["best_round"] == 1 and [r["selected"] for r in rounds] == [False, True, False]
    assert st["stopped"].startswith("round 2 did not raise validation accuracy above 0.7000 (round 1)")
    # The published model is round 1's: scoring it again gives round 1's validation loss, not round 2's.
    assert metrics["validation"]["loss"] == pytest.approx(rounds[1]["validation"]["loss"], rel=1e-6)
    assert metrics["validation"]["loss"] != pytest.approx(rounds[2]["validation"]["loss"], rel=1e-6)
    assert json.loads((result.output_dir / "metrics.json").read_text())["self_training"]["best_round"] == 1

    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(result.output_dir))
    assert classifier("the film was good")[0]["label"] in {"neg", "pos"}
    card = (result.output_dir / "README.md").read_text()
    assert "## Self-training" in card and "| 1 | " in card and "**this model**" in card
    assert "pseudo-label accuracy" in card
    assert f"at most {DEFAULT_MAX_PER_LABELLED:g} per labelled row of the class (the most confident kept)" in card
    assert "self_training" in (result.output_dir / "recipe.yaml").read_text()
    assert not (result.output_dir / "checkpoints").exists()
    # A finished run is scored without its pool, which may be gone by then.
    from hf_finetune.cli import main

    pool_file.unlink()
    assert main(["evaluate", str(result.output_dir), "--split", "validation"]) == 0


def test_with_a_validation_of_a_few_rows_per_class_every_round_runs_and_the_last_is_kept(st_recipe, reviews,
                                                                                         monkeypatch, tiny_bert,
                                                                                         tmp_path):
    import shutil

    import hf_finetune
    from hf_finetune.testing import write_sentence_transformers_config

    script_validation(monkeypatch, [0.9, 0.5])  # round 1 is "worse" on 8 rows per class: it is kept all the same
    st_recipe["data"]["files"]["validation"] = str(reviews["validation"])  # 16 rows, 8 per class
    # A sentence encoder with 24 labelled rows a class: round 0 is the few-label probe.
    st_recipe["model"] = {"name": str(write_sentence_transformers_config(shutil.copytree(tiny_bert, tmp_path / "st"),
                                                                         "mean"))}
    st_recipe["training"].pop("learning_rate", None)
    # Every pool row is confident; a class keeps at most 24 (1 per labelled row), its most confident.
    st_recipe["self_training"].update(rounds=1, threshold=0.5, max_per_labelled=1)
    st_recipe["training"].update(num_train_epochs=2, per_device_train_batch_size=8)
    st = hf_finetune.train(st_recipe).metrics["self_training"]
    assert [(r["round"], r["trained"]) for r in st["rounds"]] == [(0, True), (1, True)]
    assert st["class_caps"] == {"neg": 24, "pos": 24}
    one = st["rounds"][1]
    assert one["confident"] == 60 and max(one["kept_per_class"].values()) == 24 and 24 <= one["kept"] <= 48
    # The probe-or-fine-tune choice reads the labelled rows only: round 1's 72-96 rows (36-48 a class, above the
    # probe's 32) train a probe like round 0's.
    assert [(r["train_rows"], r["strategy"]) for r in st["rounds"]] == [(48, "linear_probe"),
                                                                          (48 + one["kept"], "linear_probe")]
    assert st["best_round"] == 1 and st["rounds"][1]["improved"] is False
    assert st["rounds_compared_on"].startswith("none: validation holds 8 rows of a class")
    assert st["top_share"] is None and [p["top_share"] for p in st["rounds"][1]["top_share_curve"]][-1] == 1.0


def test_rounds_from_the_backbone_stop_when_the_pseudo_labels_repeat(st_recipe, monkeypatch):
    import hf_finetune
    script_validation(monkeypatch, [0.5, 0.7])
    st_recipe["self_training"].update(rounds=5, threshold=0.99, class_thresholds={"neg": 0.5})
    st_recipe["training"].update(num_train_epochs=8, per_device_train_batch_size=8, learning_rate=5e-3,
                                 warmup_steps=0.1)
    st = hf_finetune.train(st_recipe).metrics["self_training"]
    rounds = st["rounds"]
    # Round 1's model labels the pool as round 0's did (every 'neg' row): round 2 would repeat round 1.
    assert [(r["round"], r["trained"]) for r in rounds] == [(0, True), (1, True), (2, False)]
    assert rounds[2]["kept_per_class"] == rounds[1]["kept_per_class"]
    assert st["best_round"] == 1 and "kept the pseudo-labels round 1 trained on" in st["stopped"]


def test_vision_pool_from_a_flat_folder(vision_recipe, tmp_path):
    import shutil

    import hf_finetune
    from hf_finetune.testing import write_pattern_folder

    source = write_pattern_folder(tmp_path / "more", {"pool": 4}, size=32, seed=3)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, path in enumerate(sorted((source / "pool").glob("*/*.png"))):
        shutil.copyfile(path, flat / f"img{i:02d}.png")  # no class folders: nothing to score with
    vision_recipe["data"]["unlabeled"] = {"image_folder": str(flat)}
    vision_recipe["self_training"] = {"rounds": 1, "threshold": 0.01, "max_class_share": 0.5, "init": "continue"}
    st = hf_finetune.train(vision_recipe).metrics["self_training"]
    assert st["pool"] == {"rows": 12, "source": str(flat), "labelled_rows": 0}
    r = st["rounds"][1]
    assert r["kept"] == sum(r["kept_per_class"].values()) and r["train_rows"] == 24 + r["kept"]
    assert max(r["kept_per_class"].values()) <= 0.5 * r["kept"]
    assert "pseudo_label_accuracy" not in r
