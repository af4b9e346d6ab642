"""Pre-flight catches each bad-data case before any model is built or data preprocessed."""

from __future__ import annotations

import pytest

from hf_finetune.cli import main

from .conftest import review_rows, write_csv, write_recipe


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fails the test if training gets as far as building the model or preprocessing the data."""
    import hf_finetune.models.backbones as backbones
    import hf_finetune.pipeline as train

    def forbidden(*args, **kwargs):
        raise AssertionError("pre-flight should have stopped the run before this")

    monkeypatch.setattr(train, "prepare_data_and_model", forbidden)
    for name in ("build_text_model", "build_vision_model", "build_tokenizer"):
        monkeypatch.setattr(backbones, name, forbidden)  # where the task layer builds them from


def _train(tmp_path, recipe, capsys) -> str:
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _replace(tmp_path, text_recipe, split, rows):
    text_recipe["data"]["files"][split] = str(write_csv(tmp_path / f"bad-{split}.csv", rows))


def test_missing_column(tmp_path, text_recipe, no_heavy_work, capsys):
    text_recipe["data"]["columns"] = {"text": "review"}
    assert "data.columns.text: column 'review' not found in split 'train'" in _train(tmp_path, text_recipe, capsys)


def test_column_of_the_wrong_type(tmp_path, text_recipe, no_heavy_work, capsys):
    _replace(tmp_path, text_recipe, "train", [{"text": i, "label": "pos" if i % 2 else "neg"} for i in range(8)])
    err = _train(tmp_path, text_recipe, capsys)
    assert "data.columns.text: column 'text' of split 'train' holds Value('int64')" in err and "not text" in err


def test_label_unseen_in_train(tmp_path, text_recipe, no_heavy_work, capsys):
    _replace(tmp_path, text_recipe, "validation", review_rows(6, seed=3, labels=("neg", "pos", "meh")))
    assert "split 'validation' has label 'meh' that does not appear" in _train(tmp_path, text_recipe, capsys)


def test_one_class(tmp_path, text_recipe, no_heavy_work, capsys):
    _replace(tmp_path, text_recipe, "train", review_rows(8, seed=3, labels=("pos",)))
    assert "has a single class ('pos')" in _train(tmp_path, text_recipe, capsys)


def test_empty_file(tmp_path, text_recipe, no_heavy_work, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    text_recipe["data"]["files"]["test"] = str(empty)
    assert f"data.files.test: {empty} holds no rows" in _train(tmp_path, text_recipe, capsys)


def test_missing_labels(tmp_path, text_recipe, no_heavy_work, capsys):
    rows = review_rows(8, seed=3)
    rows[5]["label"] = ""
    _replace(tmp_path, text_recipe, "test", rows)
    assert "split 'test' has 1 rows without a label, first at row 5" in _train(tmp_path, text_recipe, capsys)


def test_unknown_model_folder(tmp_path, text_recipe, no_heavy_work, capsys):
    text_recipe["model"]["name"] = str(tmp_path / "models" / "nothing")
    assert "model.name: local folder not found" in _train(tmp_path, text_recipe, capsys)


def test_hub_metric_offline(tmp_path, text_recipe, no_heavy_work, capsys):
    text_recipe["metrics"] = ["accuracy", "glue"]
    assert "metrics: 'glue' is not a local path" in _train(tmp_path, text_recipe, capsys)


def test_image_sample_that_does_not_decode(tmp_path, vision_recipe, pattern_folder, no_heavy_work, capsys):
    first = sorted((pattern_folder / "train" / "checkered").glob("*.png"))[0]
    first.write_bytes(first.read_bytes()[:40])
    err = _train(tmp_path, vision_recipe, capsys)
    assert "images of split 'train' do not decode" in err and str(first) in err


def test_image_paths_that_do_not_exist(tmp_path, vision_recipe, no_heavy_work, capsys):
    csv_path = write_csv(tmp_path / "imgs.csv", [{"image": f"missing/{i}.png", "label": i % 2} for i in range(4)])
    vision_recipe["data"] = {"files": {"train": str(csv_path)}, "validation_size": 2}
    err = _train(tmp_path, vision_recipe, capsys)
    assert "4 of 4 rows name no existing file" in err and "row 0: 'missing/0.png'" in err
