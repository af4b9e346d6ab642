"""The recipe schema: messages name the key, all problems come at once, overrides, every shipped recipe."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from hf_finetune.errors import RecipeError
from hf_finetune.recipe import apply_overrides, field_reference, load_recipe, validate_recipe
from hf_finetune.training.fields import training_fields

from .conftest import REPO


def problems_of(raw, source="r.yaml") -> dict[str, str]:
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, source)
    return {p.path: p.message for p in info.value.problems}


def minimal(tmp_path: Path, **extra) -> dict:
    train = tmp_path / "train.csv"
    train.write_text("text,label\na,x\nb,y\n")
    return {"task": "text-classification", "model": {"name": "bert-base-uncased"},
            "data": {"files": {"train": str(train)}}, **extra}


def test_minimal_recipe_resolves_defaults(tmp_path):
    recipe = validate_recipe(minimal(tmp_path), "recipes/my_run.yaml")
    assert recipe.data.columns.text == "text" and recipe.data.columns.label == "label"
    assert recipe.metrics == ["accuracy", "precision", "recall", "f1"]
    assert recipe.output.dir == str(Path("outputs") / "my_run")
    t = recipe.training
    assert t["eval_strategy"] == t["save_strategy"] == "epoch"
    assert t["load_best_model_at_end"] is True
    assert t["metric_for_best_model"] == "accuracy" and t["greater_is_better"] is True
    assert t["train_sampling_strategy"] == "group_by_length"
    assert recipe.model.trust_remote_code is False


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path):
    raw = minimal(tmp_path)
    raw["task"] = "text-clasification"
    raw["model"] = {"nme": "bert-base-uncased"}
    raw["data"]["max_samples"] = {"train": "lots"}
    raw["data"]["colums"] = {}
    raw["training"] = {"learning_rat": 1e-5, "per_device_train_batch_size": "sixteen", "lr_scheduler_type": "cosin"}
    raw["metrics"] = ["acuracy"]
    problems = problems_of(raw)
    assert "did you mean 'text-classification'" in problems["task"]
    assert problems["model.nme"] == "unknown key; did you mean 'name'?"
    assert problems["model.name"].startswith("required key is missing")
    assert "valid integer" in problems["data.max_samples.train"] and "'lots'" in problems["data.max_samples.train"]
    assert "did you mean 'columns'" in problems["data.colums"]
    assert problems["training.learning_rat"] == "unknown TrainingArguments field; did you mean 'learning_rate'?"
    assert "expected int" in problems["training.per_device_train_batch_size"]
    assert "did you mean 'cosine'" in problems["training.lr_scheduler_type"]
    assert problems["metrics[0]"] == "unknown metric 'acuracy'; did you mean 'accuracy'?"
    assert len(problems) == 9


def test_error_message_lists_problems_with_source(tmp_path):
    raw = minimal(tmp_path, training={"learning_rat": 1})
    raw["model"] = {}
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, "recipes/x.yaml")
    text = str(info.value)
    assert text.startswith("recipes/x.yaml: invalid recipe, 2 problems:")
    assert "  - training.learning_rat: unknown TrainingArguments field" in text
    assert "  - model.name: required key is missing" in text


def test_training_values_are_coerced_to_field_types(tmp_path):
    # PyYAML reads 1e-5 (no dot) as a string; the field type turns it into a float.
    recipe = validate_recipe(minimal(tmp_path, training={"learning_rate": "1e-5", "num_train_epochs": 2}))
    assert recipe.training["learning_rate"] == pytest.approx(1e-5)
    assert type(recipe.training["num_train_epochs"]) is float and recipe.training["num_train_epochs"] == 2.0


# TrainingArguments fields the pipeline sets itself; a recipe may set every other one
PIPELINE_OWNED = {"output_dir", "push_to_hub", "hub_model_id", "hub_private_repo", "hub_revision", "hub_token",
                  "hub_strategy", "hub_always_push", "remove_unused_columns", "label_names", "do_train", "do_eval",
                  "do_predict", "local_rank", "include_for_metrics", "batch_eval_metrics", "enable_jit_checkpoint"}


def test_training_section_knows_every_real_field_but_the_pipelines_own():
    from dataclasses import fields

    from transformers import TrainingArguments

    settable = {f.name for f in fields(TrainingArguments) if f.init}
    assert set(training_fields()) == settable - PIPELINE_OWNED
    assert {"learning_rate", "eval_strategy", "train_sampling_strategy", "warmup_steps"} <= set(training_fields())
    types = training_fields()
    assert (types["learning_rate"], types["num_train_epochs"], types["per_device_train_batch_size"]) == (
        float, float, int)


@pytest.mark.parametrize(
    "key, hint",
    [("output_dir", "output.dir"), ("push_to_hub", "hub.push"), ("hub_token", "HF_TOKEN"),
     ("remove_unused_columns", "data stage")],
)
def test_keys_owned_by_the_pipeline_point_elsewhere(tmp_path, key, hint):
    problems = problems_of(minimal(tmp_path, training={key: "x"}))
    assert hint in problems[f"training.{key}"]


def test_load_best_model_needs_matching_strategies(tmp_path):
    problems = problems_of(minimal(tmp_path, training={"eval_strategy": "steps", "save_strategy": "epoch"}))
    assert problems["training.load_best_model_at_end"] == (
        "needs training.eval_strategy and training.save_strategy to match (they are 'steps' and 'epoch')"
    )
    problems = problems_of(minimal(tmp_path, training={"eval_strategy": "no"}))
    assert "needs evaluations" in problems["training.load_best_model_at_end"]
    problems = problems_of(minimal(tmp_path, training={"eval_strategy": "steps", "save_strategy": "steps",
                                                         "eval_steps": 30, "save_steps": 50}))
    assert "multiple of training.eval_steps (30)" in problems["training.save_steps"]


def test_metric_for_best_model_must_be_produced(tmp_path):
    problems = problems_of(minimal(tmp_path, metrics=["accuracy"], training={"metric_for_best_model": "f1"}))
    assert problems["training.metric_for_best_model"] == (
        "'f1' is not produced by this run; it produces accuracy, loss"
    )
    ok = validate_recipe(minimal(tmp_path, metrics=["accuracy", "f1"], training={"metric_for_best_model": "eval_f1"}))
    assert ok.training["greater_is_better"] is True
    ok = validate_recipe(minimal(tmp_path, training={"metric_for_best_model": "loss"}))
    assert ok.training["greater_is_better"] is False


def test_data_sources_and_task_specific_keys(tmp_path):
    raw = minimal(tmp_path)
    raw["data"]["dataset"] = "imdb"
    assert problems_of(raw)["data"] == "give one data source, not data.dataset and data.files"
    raw = minimal(tmp_path)
    raw["data"] = {}
    assert "say where the data is" in problems_of(raw)["data"]
    raw = minimal(tmp_path, preprocessing={"max_length": 64})
    raw["task"] = "image-classification"
    raw["data"]["columns"] = {"text": "review"}
    problems = problems_of(raw)
    assert problems["data.columns.text"] == "only applies to task: text-classification"
    assert "image size comes from the backbone" in problems["preprocessing.max_length"]
    raw = minimal(tmp_path, augmentation={"hflip": 0.0})
    assert problems_of(raw)["augmentation"] == "only applies to task: image-classification"


def test_missing_and_unsupported_files_are_named(tmp_path):
    raw = minimal(tmp_path)
    raw["data"]["files"]["test"] = str(tmp_path / "nope.csv")
    raw["data"]["files"]["validation"] = str(tmp_path / "notes.txt")
    problems = problems_of(raw)
    assert problems["data.files.test"] == f"file not found: {tmp_path / 'nope.csv'}"
    assert "unsupported file type" in problems["data.files.validation"]
    raw = minimal(tmp_path)
    raw["data"]["files"] = {"training": raw["data"]["files"]["train"]}
    assert "has no 'train' split" in problems_of(raw)["data.files"]


def test_overrides_parse_yaml_values_and_must_name_real_keys(tmp_path):
    raw = minimal(tmp_path)
    before = copy.deepcopy(raw)
    out = apply_overrides(raw, ["training.learning_rate=3e-5", "metrics=[accuracy, f1]", "data.splits.test=null",
                                "model.trust_remote_code=true", "data.files.extra=x.csv"])
    assert out["training"]["learning_rate"] == "3e-5"  # coerced to float by validation
    assert out["metrics"] == ["accuracy", "f1"]
    assert out["data"]["splits"]["test"] is None
    assert out["model"]["trust_remote_code"] is True
    assert out["data"]["files"]["extra"] == "x.csv"
    assert raw == before  # the input is not modified
    with pytest.raises(RecipeError) as info:
        apply_overrides(raw, ["training.learnin_rate=1", "model.nme=x", "data.splits.train.deep=1", "novalue"])
    text = str(info.value)
    assert "training.learnin_rate: unknown TrainingArguments field; did you mean 'learning_rate'?" in text
    assert "model.nme: no such recipe key; did you mean 'name'?" in text
    assert "data.splits.train: is a value, not a section" in text
    assert "an override must look like dotted.key=value" in text


def test_yaml_is_read_with_the_safe_loader(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("task: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert "not valid YAML" in str(info.value)
    path.write_text("task: [unclosed\n")
    with pytest.raises(RecipeError, match=r"line \d+, column \d+"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")


def leaf_keys(resolved: dict, sections: set[str], prefix: str = "") -> set[str]:
    """Dotted keys of a resolved recipe; a mapping is descended into when it is a section of the reference."""
    out = set()
    for key, value in resolved.items():
        path = prefix + key
        if isinstance(value, dict) and path in sections:
            out |= leaf_keys(value, sections, path + ".")
        else:
            out.add(path)
    return out


def test_field_reference_documents_every_key(tmp_path):
    rows = field_reference()
    keys = [row[0] for row in rows]
    assert len(keys) == len(set(keys))
    assert {"task", "model.name", "data.files", "data.columns.text", "data.max_samples.train",
            "preprocessing.max_length", "training", "output.dir"} <= set(keys)
    assert all(description for _, _, _, description in rows)
    # exactly the keys a resolved recipe has, text, vision and tokens together (some apply to one task only)
    sections = {".".join(key.split(".")[:n]) for key in keys for n in range(1, key.count(".") + 1)}
    (tmp_path / "images" / "a").mkdir(parents=True)
    vision = {"task": "image-classification", "model": {"name": "timm/resnet50.a1_in1k"},
              "data": {"image_folder": str(tmp_path / "images")}}
    # The search and rank sections (hf-finetune tune / rank) appear in a resolved recipe only when the
    # recipe has them; finetune.lora and output.save_adapter with strategy lora only; the self-training
    # keys only in a recipe that self-trains.
    vision_st = {**vision, "data": {**vision["data"], "unlabeled": {"image_folder": str(tmp_path / "images")}},
                 "self_training": {}}
    resolved = [validate_recipe(minimal(tmp_path)).to_dict(), validate_recipe(vision).to_dict(),
                validate_recipe({**minimal(tmp_path), "search": {}, "rank": {}}).to_dict(),
                validate_recipe(minimal(tmp_path, finetune={"strategy": "lora"})).to_dict(),
                validate_recipe(vision_st).to_dict(),
                validate_recipe({**minimal(tmp_path), "task": "token-classification"}).to_dict(),
                validate_recipe({**vision, "task": "semantic-segmentation",
                                 "data": {"image_folder": str(tmp_path), "mask_folder": str(tmp_path / "images")}}
                                ).to_dict()]
    assert set().union(*(leaf_keys(r, sections) for r in resolved)) == set(keys)
    assert not {k for k in leaf_keys(resolved[0], sections)
                if k.split(".")[0] in ("search", "rank", "self_training") or "unlabeled" in k or "lora" in k}
    assert "augmentation.hflip" not in leaf_keys(resolved[0], sections)
    assert "preprocessing.max_length" not in leaf_keys(resolved[1], sections)


SHIPPED = {  # task, backbone, strategy of every recipe in recipes/
    "bert_sentiment.yaml": ("text-classification", "google-bert/bert-base-uncased", "full"),
    "quickstart_text.yaml": ("text-classification", "examples/models/tiny-bert", "full"),
    "quickstart_ner.yaml": ("token-classification", "examples/models/tiny-bert-ner", "full"),
    "quickstart_regression.yaml": ("text-regression", "examples/models/tiny-bert", "full"),
    "quickstart_segmentation.yaml": ("semantic-segmentation", "examples/models/tiny-resnet", "full"),
    "quickstart_multi_label.yaml": ("text-multi-label", "examples/models/tiny-bert", "full"),
    "quickstart_vision.yaml": ("image-classification", "examples/models/tiny-resnet", "full"),
    "resnet50_beans.yaml": ("image-classification", "timm/resnet50.a1_in1k", "full"),
    "vit_beans_lpft.yaml": ("image-classification", "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
                            "probe_then_full"),
}


def test_the_shipped_recipes_are_the_listed_ones():
    assert sorted(p.name for p in (REPO / "recipes").glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates_and_names_its_launch_command(path, monkeypatch):
    monkeypatch.chdir(REPO)  # recipes use paths relative to the repository root
    recipe = load_recipe(path.relative_to(REPO))
    assert (recipe.task, recipe.model.name, recipe.finetune.strategy) == SHIPPED[path.name]
    assert recipe.output.dir == f"outputs/{path.stem}"
    first_lines = path.read_text().splitlines()[:4]
    assert first_lines[0].startswith("#")
    assert any(f"recipes/{path.name}" in line and ("hf-finetune train" in line or "accelerate launch" in line)
               for line in first_lines), "each recipe starts with a comment giving its launch command"


def test_recipe_round_trips_through_resolved_yaml(tmp_path):
    recipe = validate_recipe(minimal(tmp_path), "r.yaml")
    again = validate_recipe(yaml.safe_load(recipe.to_yaml()), "r.yaml")
    assert again.to_dict() == recipe.to_dict()


def test_hub_section_needs_a_valid_repo_id_to_push(tmp_path):
    assert validate_recipe(minimal(tmp_path)).hub.push is False
    recipe = validate_recipe(minimal(tmp_path, hub={"push": True, "repo_id": "me/my-model", "revision": "v1"}))
    assert (recipe.hub.repo_id, recipe.hub.private, recipe.hub.revision) == ("me/my-model", True, "v1")
    assert recipe.to_dict()["hub"] == {"push": True, "repo_id": "me/my-model", "private": True, "revision": "v1"}
    assert problems_of(minimal(tmp_path, hub={"push": True})) == {
        "hub.repo_id": "required when hub.push is true (e.g. my-name/my-model)"}
    assert "not a valid Hub repository id" in problems_of(minimal(tmp_path, hub={"repo_id": "a/b/c"}))["hub.repo_id"]


@pytest.mark.parametrize("where", ["hub", "top", "model"])
def test_a_token_in_a_recipe_is_refused_without_echoing_it(tmp_path, where):
    secret = "hf_NotARealTokenButSecret0123"
    raw = minimal(tmp_path)
    if where == "top":
        raw["hf_token"] = secret
    else:
        raw.setdefault(where, {})["token"] = secret
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, "r.yaml")
    assert "tokens never go in a recipe: run `hf auth login` or set the HF_TOKEN environment variable" in str(info.value)
    assert secret not in str(info.value)


def test_card_section_is_optional_metadata(tmp_path):
    recipe = validate_recipe(minimal(tmp_path, card={"license": "apache-2.0", "base_model": "google-bert/bert-base-uncased"}))
    assert recipe.card.license == "apache-2.0" and recipe.card.dataset is None
    assert problems_of(minimal(tmp_path, card={"licence": "mit"})) == {"card.licence": "unknown key; did you mean 'license'?"}
    assert "not a valid Hub repository id" in problems_of(minimal(tmp_path, card={"base_model": "models/x/y"}))[
        "card.base_model"]
