"""The data stage: label space rules, split selection and carving, caps, tokenization cache, padding."""

from __future__ import annotations

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features

from hf_finetune.data import build_datasets
from hf_finetune.data.labels import build_label_space, encode_labels
from hf_finetune.data.splits import cap_rows, carve_validation, select_splits
from hf_finetune.data.text import TextCollator
from hf_finetune.errors import DataError
from hf_finetune.recipe import DataSpec, validate_recipe

from .conftest import review_rows, write_csv


def space(train, **others):
    return build_label_space({"train": train, **others}, "train", "label", None)


def test_string_labels_are_sorted_and_integer_labels_numeric():
    assert space(Dataset.from_dict({"label": ["pos", "neg", "mid", "pos"]})).names == ("mid", "neg", "pos")
    ints = space(Dataset.from_dict({"label": [10, 2, 1, 2]}))
    assert ints.names == ("1", "2", "10") and ints.values == (1, 2, 10)


def test_class_label_names_keep_their_order():
    features = Features({"label": ClassLabel(names=["zebra", "apple", "mango"])})
    train = Dataset.from_dict({"label": [0, 1, 2, 1]}, features=features)
    labels = space(train)
    assert labels.names == ("zebra", "apple", "mango")
    assert labels.id2label == {0: "zebra", 1: "apple", 2: "mango"}


def test_label_names_name_integer_labels_and_order_string_labels():
    ints = Dataset.from_dict({"label": [0, 1, 1, 0]})
    assert build_label_space({"train": ints}, "train", "label", ["negative", "positive"]).names == (
        "negative", "positive")
    strings = Dataset.from_dict({"label": ["b", "a", "c"]})
    ordered = build_label_space({"train": strings}, "train", "label", ["c", "b", "a"])
    assert ordered.names == ("c", "b", "a") and ordered.value_to_id() == {"c": 0, "b": 1, "a": 2}
    with pytest.raises(DataError, match="does not list the training label 'a'"):
        build_label_space({"train": strings}, "train", "label", ["c", "b"])
    with pytest.raises(DataError, match="but the training split holds 1"):
        build_label_space({"train": ints}, "train", "label", ["only"])


def test_label_unseen_in_train_is_an_error_naming_it():
    train = Dataset.from_dict({"label": ["neg", "pos", "neg"]})
    validation = Dataset.from_dict({"label": ["neg", "neutral"]})
    with pytest.raises(DataError) as info:
        space(train, validation=validation)
    assert "split 'validation' has label 'neutral' that does not appear in the training split" in str(info.value)
    assert "training labels: neg, pos" in str(info.value)


def test_one_class_is_an_error():
    with pytest.raises(DataError, match=r"has a single class \('pos'\)"):
        space(Dataset.from_dict({"label": ["pos", "pos"]}))
    features = Features({"label": ClassLabel(names=["a", "b"])})
    with pytest.raises(DataError, match=r"single class \('b'\)"):
        space(Dataset.from_dict({"label": [1, 1]}, features=features))


def test_missing_labels_and_fractional_labels_are_errors(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": ""}])
    train = Dataset.from_csv(str(path)).add_column("__source_file__", [str(path)] * 2)
    with pytest.raises(DataError, match=r"1 rows without a label, first at row 1 \(.*t\.csv\)"):
        space(train)
    with pytest.raises(DataError, match="fractional numbers.*regression is not supported"):
        space(Dataset.from_dict({"label": [0.5, 1.0]}))


def test_hidden_test_labels_are_reported():
    features = Features({"label": ClassLabel(names=["neg", "pos"])})
    train = Dataset.from_dict({"label": [0, 1]}, features=features)
    test = Dataset.from_dict({"label": [-1, -1]}, features=features)
    with pytest.raises(DataError, match="split 'test' has labels -1 .*hidden"):
        space(train, test=test)


def test_encode_labels_maps_values_and_carries_names():
    labels = space(Dataset.from_dict({"label": ["pos", "neg"]}))
    encoded = encode_labels(Dataset.from_dict({"label": ["pos", "neg", "pos"]}), "label", labels)
    assert encoded["labels"] == [1, 0, 1]
    assert encoded.features["labels"].names == ["neg", "pos"]
    assert "label" not in encoded.column_names


def test_select_splits_names_missing_splits():
    raw = DatasetDict({"train": Dataset.from_dict({"x": [1]}), "test": Dataset.from_dict({"x": [1]})})
    chosen = select_splits(raw, DataSpec(dataset="d"))
    assert set(chosen) == {"train", "test"}  # validation will be carved
    with pytest.raises(DataError, match="data.splits.validation: split 'dev' not found; the data has train, test"):
        select_splits(raw, DataSpec(dataset="d", splits={"validation": "dev"}))
    with pytest.raises(DataError, match="did you mean 'test'"):
        select_splits(raw, DataSpec(dataset="d", splits={"test": "tst"}))
    empty = DatasetDict({"train": Dataset.from_dict({"x": []})})
    with pytest.raises(DataError, match="split 'train' is empty"):
        select_splits(empty, DataSpec(dataset="d"))


def test_carved_validation_is_seeded_and_stratified():
    labels = [0] * 80 + [1] * 20
    train = Dataset.from_dict({"labels": labels, "i": list(range(100))}).cast_column(
        "labels", ClassLabel(names=["a", "b"]))
    rest, val = carve_validation(train, 0.2, seed=7)
    assert len(val) == 20 and len(rest) == 80
    assert sorted(val["labels"]).count(1) == 4  # 20% of each class
    assert set(val["i"]).isdisjoint(rest["i"])
    _, again = carve_validation(train, 0.2, seed=7)
    assert again["i"] == val["i"]
    _, other = carve_validation(train, 0.2, seed=8)
    assert other["i"] != val["i"]
    _, counted = carve_validation(train, 10, seed=7)
    assert len(counted) == 10
    with pytest.raises(DataError, match="leaves no rows for training"):
        carve_validation(train, 100, seed=7)


def test_caps_draw_a_seeded_sample():
    ds = Dataset.from_dict({"i": list(range(100))})
    capped = cap_rows(ds, 10, seed=0)
    assert len(capped) == 10 and capped["i"] != list(range(10))
    assert cap_rows(ds, 10, seed=0)["i"] == capped["i"]
    assert cap_rows(ds, None, seed=0) is ds and cap_rows(ds, 500, seed=0) is ds


def _recipe(text_recipe, **data):
    text_recipe["data"].update(data)
    return validate_recipe(text_recipe, "r.yaml")


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_text_stage_end_to_end_and_cache_reuse(text_recipe, tiny_bert):
    recipe = _recipe(text_recipe)
    tok = _tokenizer(tiny_bert)
    first = build_datasets(recipe, tokenizer=tok, max_length=32)
    assert first.labels.names == ("neg", "pos")
    assert first.sizes == {"train": 48, "validation": 16, "test": 16}
    # Only what collation cannot rebuild is cached: ids (the attention mask comes with padding).
    assert set(first.splits["train"].column_names) == {"input_ids", "labels", "length"}
    assert not any(entry["reused"] for entry in first.cache.values())
    second = build_datasets(recipe, tokenizer=tok, max_length=32)
    assert all(entry["reused"] for entry in second.cache.values())
    assert second.cache["train"]["file"] == first.cache["train"]["file"]
    assert second.splits["train"]["input_ids"] == first.splits["train"]["input_ids"]
    other_length = build_datasets(recipe, tokenizer=tok, max_length=16)
    assert not any(entry["reused"] for entry in other_length.cache.values())
    other_tokenizer = _tokenizer(tiny_bert)
    other_tokenizer.add_tokens(["newword"])
    changed = build_datasets(recipe, tokenizer=other_tokenizer, max_length=32)
    assert not any(entry["reused"] for entry in changed.cache.values())


def test_text_stage_carves_validation_and_caps(text_recipe, tiny_bert):
    files = text_recipe["data"]["files"]
    del files["validation"]
    recipe = _recipe(text_recipe, validation_size=0.25, max_samples={"train": 20, "test": 5})
    data = build_datasets(recipe, tokenizer=_tokenizer(tiny_bert), max_length=32)
    assert data.sizes == {"train": 20, "validation": 12, "test": 5}
    assert "carved from split 'train' (seed 42)" in data.sources["validation"]
    assert "capped at 20 rows" in data.sources["train"]


def test_missing_column_and_null_text_are_named(text_recipe, tiny_bert, tmp_path):
    recipe = _recipe(text_recipe, columns={"text": "txt"})
    with pytest.raises(DataError) as info:
        build_datasets(recipe, tokenizer=_tokenizer(tiny_bert), max_length=32)
    assert str(info.value) == (
        "data.columns.text: column 'txt' not found in split 'train' (columns: text, label); did you mean 'text'?"
    )
    del text_recipe["data"]["columns"]
    rows = review_rows(6, seed=0)
    rows[3]["text"] = ""
    text_recipe["data"]["files"]["train"] = str(write_csv(tmp_path / "holes.csv", rows))
    with pytest.raises(DataError, match=r"column 'text' of split 'train' has 1 empty \(null, empty or "
                                         r"whitespace-only\) rows, first at row 3"):
        build_datasets(validate_recipe(text_recipe), tokenizer=_tokenizer(tiny_bert), max_length=32)
    rows[3]["text"], rows[5]["text"] = "   \t ", "\u3000"  # whitespace only: nothing for the tokenizer
    text_recipe["data"]["files"]["train"] = str(write_csv(tmp_path / "blank.csv", rows))
    with pytest.raises(DataError, match=r"has 2 empty \(null, empty or whitespace-only\) rows, first at row 3"):
        build_datasets(validate_recipe(text_recipe), tokenizer=_tokenizer(tiny_bert), max_length=32)


@pytest.mark.parametrize(("labels", "message"), [
    ([1, "neg", 0, "pos"], "mixes integers (1, 0) and names (neg, pos); use one kind"),
    (["1", "neg", "0", "neg"], "mixes integers (1, 0) and names (neg)"),
    ([["a", "b"], "a", "b", "a"], "holds ['a', 'b'] (list); labels must be strings or integers (multi-label"),
])
def test_labels_of_two_kinds_or_lists_are_errors(labels, message):
    from datasets import Value
    from datasets.features import Json

    feature = Json() if any(not isinstance(v, str) for v in labels) else Value("string")
    ds = Dataset.from_dict({"label": labels}, features=Features({"label": feature}))
    with pytest.raises(DataError) as info:
        space(ds)
    assert f"data.columns.label: column 'label' of split 'train' {message}" in str(info.value)


def test_unknown_test_label_in_files(text_recipe, tiny_bert, tmp_path):
    rows = review_rows(4, seed=0, labels=("neg", "pos", "meh"))
    text_recipe["data"]["files"]["test"] = str(write_csv(tmp_path / "test3.csv", rows))
    with pytest.raises(DataError, match="split 'test' has label 'meh' that does not appear in the training split"):
        build_datasets(validate_recipe(text_recipe), tokenizer=_tokenizer(tiny_bert), max_length=32)


def test_unreadable_file_is_named(text_recipe, tiny_bert, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\nnot json at all\n')
    text_recipe["data"]["files"]["validation"] = str(bad)
    with pytest.raises(DataError, match=r"data.files.validation: cannot read .*bad.jsonl as json"):
        build_datasets(validate_recipe(text_recipe), tokenizer=_tokenizer(tiny_bert), max_length=32)


def test_collator_pads_each_batch_to_its_longest_row(tiny_bert):
    tok = _tokenizer(tiny_bert)
    rows = [dict(tok(text), labels=0, length=0) for text in ["good", "the movie was really quite good"]]
    batch = TextCollator(tok)(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (2, longest) and "length" not in batch
    assert batch["attention_mask"][0].sum() == len(rows[0]["input_ids"])
    assert TextCollator(tok, pad_to_multiple_of=8)(rows)["input_ids"].shape == (2, 8)


def test_sentence_pairs_are_encoded_together(tmp_path, tiny_bert):
    rows = [{"premise": "the movie was good", "hypothesis": "the film was great", "label": "same"},
            {"premise": "the plot was dull", "hypothesis": "the acting was superb", "label": "different"}] * 4
    path = write_csv(tmp_path / "pairs.csv", rows)
    recipe = validate_recipe({
        "task": "text-classification", "model": {"name": str(tiny_bert)},
        "data": {"files": {"train": str(path)}, "columns": {"text": "premise", "text_pair": "hypothesis"},
                 "validation_size": 2, "cache_dir": str(tmp_path / "cache")},
    })
    tok = _tokenizer(tiny_bert)
    data = build_datasets(recipe, tokenizer=tok, max_length=32)
    row = data.splits["train"][0]
    assert row["input_ids"].count(tok.sep_token_id) == 2  # [CLS] a [SEP] b [SEP]
    assert set(row["token_type_ids"]) == {0, 1}
    assert data.labels.names == ("different", "same")


def test_saved_dataset_folder_and_integer_labels(tmp_path, tiny_bert):
    rows = {"sentence": ["the movie was good", "the plot was dull"] * 6, "stars": [5, 1] * 6}
    DatasetDict({"train": Dataset.from_dict(rows), "test": Dataset.from_dict(rows)}).save_to_disk(tmp_path / "ds")
    recipe = validate_recipe({
        "task": "text-classification", "model": {"name": str(tiny_bert)},
        "data": {"dataset": str(tmp_path / "ds"), "columns": {"text": "sentence", "label": "stars"},
                 "label_names": None, "validation_size": 4, "cache_dir": str(tmp_path / "cache")},
    })
    data = build_datasets(recipe, tokenizer=_tokenizer(tiny_bert), max_length=32)
    assert data.labels.names == ("1", "5")
    assert data.sizes == {"train": 8, "validation": 4, "test": 12}
    assert sorted(set(data.splits["test"]["labels"])) == [0, 1]
