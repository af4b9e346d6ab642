"""`model.hidden_dropout`: the rate of a text backbone's hidden-state dropout while fine-tuning, under the
name each family's config gives it, recorded in the resolved recipe (models/hidden_dropout.py)."""

import json

import pytest
import yaml
from transformers import BertConfig, DistilBertConfig, GPT2Config

import hf_finetune
from hf_finetune.errors import ModelError, RecipeError
from hf_finetune.models.hidden_dropout import set_hidden_dropout


def test_each_family_gets_the_rate_under_its_own_names():
    bert = BertConfig()
    assert set_hidden_dropout(bert, None, "bert") is None and bert.hidden_dropout_prob == 0.1  # null: the config's
    assert set_hidden_dropout(bert, 0.0, "bert") == 0.0 == bert.hidden_dropout_prob
    assert bert.classifier_dropout is None  # unset, BERT's head follows hidden_dropout_prob
    bert = BertConfig(classifier_dropout=0.3)  # a head rate of its own is set too
    set_hidden_dropout(bert, 0.05, "bert")
    assert (bert.hidden_dropout_prob, bert.classifier_dropout) == (0.05, 0.05)
    distil = DistilBertConfig()
    set_hidden_dropout(distil, 0.0, "distil")
    assert (distil.dropout, distil.seq_classif_dropout, distil.attention_dropout) == (0.0, 0.0, 0.1)  # not attention
    gpt2 = GPT2Config()
    set_hidden_dropout(gpt2, 0.0, "gpt2")
    assert (gpt2.resid_pdrop, gpt2.embd_pdrop, gpt2.summary_first_dropout, gpt2.attn_pdrop) == (0.0, 0.0, 0.0, 0.1)


def test_the_resolved_recipe_records_one_rate_or_none():
    from types import SimpleNamespace

    from hf_finetune.models.hidden_dropout import trained_hidden_dropout

    assert trained_hidden_dropout(SimpleNamespace(config=BertConfig())) == {"hidden_dropout": 0.1}
    distil = DistilBertConfig()  # 0.1 on the hidden states, 0.2 on the head: null reproduces both, one key cannot
    assert trained_hidden_dropout(SimpleNamespace(config=distil)) == {}
    set_hidden_dropout(distil, 0.0, "distil")
    assert trained_hidden_dropout(SimpleNamespace(config=distil)) == {"hidden_dropout": 0.0}


def test_a_rate_for_a_model_without_one_is_a_clear_error():
    class Config:
        model_type = "odd"

    assert set_hidden_dropout(Config(), None, "odd") is None
    assert set_hidden_dropout(Config(), 0.0, "odd") is None  # a resolved recipe's 0: already true
    with pytest.raises(ModelError, match=r"model.hidden_dropout: odd \(a odd model\) keeps no hidden-state dropout "
                                         r"under hidden_dropout_prob, dropout, resid_pdrop, so 0.1 cannot be applied"):
        set_hidden_dropout(Config(), 0.1, "odd")


def test_a_run_trains_with_the_recipes_rate_and_records_it(tmp_path, text_recipe, text_run, tiny_bert):
    # Without the key: the backbone's own rate, recorded.
    assert json.loads((tiny_bert / "config.json").read_text())["hidden_dropout_prob"] == 0.1
    assert yaml.safe_load((text_run / "recipe.yaml").read_text())["model"]["hidden_dropout"] == 0.1
    recipe = {**text_recipe, "model": {**text_recipe["model"], "hidden_dropout": 0.0},
              "training": {**text_recipe["training"], "num_train_epochs": 1},
              "output": {"dir": str(tmp_path / "run")}}
    hf_finetune.train(recipe)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["hidden_dropout_prob"] == 0.0
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["model"]["hidden_dropout"] == 0.0


def test_hidden_dropout_on_an_image_recipe_is_a_recipe_error(vision_recipe):
    recipe = {**vision_recipe, "model": {**vision_recipe["model"], "hidden_dropout": 0.0}}
    with pytest.raises(RecipeError, match="model.hidden_dropout: only applies to text models"):
        hf_finetune.check(recipe, data=False)
    assert "hidden_dropout" not in hf_finetune.check(vision_recipe, data=False).to_dict()["model"]


def test_members_that_differ_only_in_dropout_share_an_architecture():
    from hf_finetune.combine.members import NOT_ARCHITECTURE

    assert {"hidden_dropout_prob", "dropout", "resid_pdrop", "classifier_dropout", "seq_classif_dropout"} <= NOT_ARCHITECTURE


@pytest.mark.parametrize(("rows", "settings", "expected"), [
    (500, {}, 0.0),  # from HIDDEN_DROPOUT_OFF_FROM_ROWS training rows: off by default
    (499, {}, 0.1),  # fewer: the backbone's rate, which regularises few-label runs
    (500, {"finetune": {"data_aware": False}}, 0.1),  # no data-aware defaults: the backbone's
    (500, {"model": {"hidden_dropout": 0.05}}, 0.05),  # the recipe's own rate wins
])
def test_from_500_training_rows_the_default_turns_the_dropout_off(tmp_path, tiny_bert, caplog, rows, settings,
                                                                 expected):
    import csv
    import logging

    from hf_finetune.pipeline import build_data_and_model
    from hf_finetune.recipe import validate_recipe
    from hf_finetune.search.defaults import run_values
    files = {}
    for split, count in (("train", rows), ("validation", 20)):
        files[split] = tmp_path / f"{split}.csv"
        with files[split].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows([f"the film was {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg"]
                             for i in range(count))
    recipe = {"task": "text-classification", "model": {"name": str(tiny_bert), **settings.get("model", {})},
              "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(tmp_path / "cache")},
              "finetune": settings.get("finetune", {}), "output": {"dir": str(tmp_path / "run")}}
    with caplog.at_level(logging.INFO, logger="hf_finetune"):
        _, model, _, _, decided = build_data_and_model(validate_recipe(recipe))
    assert model.config.hidden_dropout_prob == expected and decided["model"]["hidden_dropout"] == expected
    dropouts = {m.p for name, m in model.named_modules() if type(m).__name__ == "Dropout" and "attention.self" not in name}
    assert dropouts == {expected}  # every hidden-state dropout layer, the head's included, was built with it
    decision = f"Default from the data: model.hidden_dropout = 0.0 ({rows} labelled training rows, at least 500"
    assert (decision in caplog.text) == (expected == 0.0)
    # tune's trial 0 is the run at its defaults: it reads the same rate (search/defaults.run_values)
    assert run_values(validate_recipe(recipe), ["model.hidden_dropout"]) == {
        "model.hidden_dropout": None if expected == 0.1 else expected}
