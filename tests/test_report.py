"""The model card, the plots and the summary line: valid for the Hub, readable, and holding the real numbers.

The card is rendered from the records a run leaves (recipe.yaml, metrics.json, run.json, training_log.json).
tests/fixtures/card holds those records from two real quickstart runs (see its README.md), so the card's
content is tested here without training; a few tests check, end to end, the card a real run writes.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load
from PIL import Image

from hf_finetune.cli import main
from hf_finetune.recipe import validate_recipe
from hf_finetune.report import card as card_module
from hf_finetune.report import plots, record, summary

from .conftest import REPO, review_rows, write_csv, write_recipe

FIXTURES = Path(__file__).parent / "fixtures" / "card"
PLOTS = ["training_loss.png", "validation_metrics.png", "confusion_matrix_validation.png",
         "confusion_matrix_test.png"]
REPORT_FILES = ["training_log.json", *PLOTS, "README.md"]  # what write_report writes, in its order
LINKS = {
    "training_loss.png": "![Training and validation loss](training_loss.png)",
    "validation_metrics.png": "![Validation metrics by epoch](validation_metrics.png)",
    "confusion_matrix_validation.png": "![Confusion matrix (validation)](confusion_matrix_validation.png)",
    "confusion_matrix_test.png": "![Confusion matrix (test)](confusion_matrix_test.png)",
}
METRIC_LABELS = {"accuracy": "Accuracy", "precision": "Precision (macro)", "recall": "Recall (macro)",
                 "f1": "F1 (macro)"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fixture(kind: str) -> tuple[dict, dict, dict, list]:
    """A fresh copy of the recorded run `kind` (text or vision): recipe, metrics, run.json, log history."""
    folder = FIXTURES / kind
    return (yaml.safe_load((folder / "recipe.yaml").read_text()), json.loads((folder / "metrics.json").read_text()),
            json.loads((folder / "run.json").read_text()), json.loads((folder / "training_log.json").read_text()))


def render(recipe: dict, metrics: dict, run: dict, plots: list[str] = PLOTS, model_id: str | None = None) -> str:
    return card_module.render_card(recipe, metrics, run, plots=plots, model_id=model_id or recipe["output"]["dir"])


def section(text: str, heading: str) -> str:
    """A `## heading` section of the card, up to the next `## ` heading."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start + 1:end if end >= 0 else None].rstrip("\n")


def records(out: Path) -> tuple[dict, dict, dict]:
    return (yaml.safe_load((out / "recipe.yaml").read_text()), json.loads((out / "metrics.json").read_text()),
            json.loads((out / "run.json").read_text()))


# --- the fixtures themselves --------------------------------------------------------------------------------

def at_keys_of(resolved: dict, recorded: dict) -> dict:
    """`resolved`, cut down to the keys `recorded` has (at every depth)."""
    return {key: at_keys_of(resolved[key], value) if isinstance(value, dict) and isinstance(resolved.get(key), dict)
            else resolved.get(key, "<missing>") for key, value in recorded.items()}


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_the_fixture_recipes_are_what_the_schema_resolves(kind, monkeypatch):
    """A recorded key the schema renamed, dropped or resolves differently fails here: record the runs again
    (tests/fixtures/card/README.md). Keys added to the schema since are not in the records, and need not be."""
    monkeypatch.chdir(REPO)  # the quickstart recipes' data paths are relative to the repository root
    recipe, metrics, run, log = fixture(kind)
    assert at_keys_of(validate_recipe(copy.deepcopy(recipe), f"{kind}/recipe.yaml").to_dict(), recipe) == recipe
    assert list(metrics) == ["validation", "test", "train"] and run["status"] == "complete"
    assert run["labels"] == metrics["validation"]["confusion_matrix"]["labels"]


# --- metadata ------------------------------------------------------------------------------------------------

def test_card_metadata_is_the_hub_model_index_of_the_runs_metrics(tmp_path):
    recipe, metrics, run, _ = fixture("text")
    path = tmp_path / "README.md"
    path.write_text(render(recipe, metrics, run))
    meta = metadata_load(path)
    # local backbone and data, no license in the recipe: no base_model, datasets or license keys
    assert set(meta) == {"library_name", "metrics", "pipeline_tag", "tags", "model-index"}
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert meta["tags"] == ["hf-finetune", "text-classification"]
    assert meta["metrics"] == ["accuracy", "precision", "recall", "f1"]
    [index] = meta["model-index"]
    assert index["name"] == "quickstart_text"
    assert [r["dataset"] for r in index["results"]] == [{"name": "reviews", "type": "csv", "split": "validation"},
                                                         {"name": "reviews", "type": "csv", "split": "test"}]
    assert all(r["task"] == {"type": "text-classification", "name": "Text Classification"} for r in index["results"])
    for result in index["results"]:
        split = result["dataset"]["split"]
        assert result["metrics"] == [
            {"type": name, "value": metrics[split][name], "name": f"{label}, {split}",
             **({"args": {"average": "macro"}} if name != "accuracy" else {})}
            for name, label in METRIC_LABELS.items()]
    # the numbers are the fixture's, not re-computed ones
    found = {(r.dataset_split, r.metric_type): r.metric_value for r in ModelCard.load(path).data.eval_results}
    assert found[("validation", "accuracy")] == 0.715 and found[("test", "f1")] == 0.5372186358733444
    assert len(found) == 8


def test_card_metadata_names_hub_base_model_dataset_and_license():
    recipe, metrics, run, _ = fixture("text")
    recipe["card"]["license"] = "apache-2.0"
    run["hub_ids"] = {"base_model": "google-bert/bert-base-uncased", "dataset": "stanfordnlp/imdb"}
    card = ModelCard(render(recipe, metrics, run, plots=[], model_id="me/bert-imdb"))
    assert card.data.base_model == "google-bert/bert-base-uncased"
    assert card.data.datasets == ["stanfordnlp/imdb"] and card.data.license == "apache-2.0"
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {("stanfordnlp/imdb",
                                                                                   "stanfordnlp/imdb")}
    assert card.data.to_dict()["model-index"][0]["name"] == "bert-imdb"
    assert card.text.startswith("\n# bert-imdb\n\nThis model is a fine-tuned version of "
                                "[google-bert/bert-base-uncased](https://huggingface.co/google-bert/bert-base-uncased)"
                                " (loaded from `examples/models/tiny-bert`) for text classification")
    assert 'pipeline("text-classification", model="me/bert-imdb")' in card.text
    assert "](training_loss.png)" not in card.text  # only plots that exist are linked


def test_a_carved_validation_split_and_random_weights_are_said_so():
    recipe, metrics, run, _ = fixture("text")
    recipe["data"]["files"].pop("validation")
    recipe["data"]["splits"]["validation"] = None
    run["splits"]["validation"]["source"] = "carved from split 'train' (seed 42)"
    recipe["model"]["pretrained"] = False
    card = ModelCard(render(recipe, metrics, run))
    assert [r.dataset_split for r in card.data.eval_results] == ["train (carved out for validation)"] * 4 + ["test"] * 4
    assert "This model is the architecture of `examples/models/tiny-bert`, trained from random weights, for " \
           "text classification, trained on local files (train: `train.csv`; test: `test.csv`)" in card.text
    assert "| validation | carved from split 'train' (seed 42) | 200 |" in card.text


# --- results ------------------------------------------------------------------------------------------------

TEXT_RESULTS = """## Results

| metric | validation | test |
| --- | --- | --- |
| Accuracy | 0.7150 | 0.6533 |
| Precision (macro) | 0.5081 | 0.4687 |
| Recall (macro) | 0.6667 | 0.6667 |
| F1 (macro) | 0.5697 | 0.5372 |
| Loss | 1.0712 | 1.0719 |
| Samples | 200 | 300 |

The weights are the best checkpoint by validation `f1`: 0.5697 (step 141).

### Per class (validation)

| class | precision | recall | F1 | support |
| --- | --- | --- | --- | --- |
| negative | 0.0000 | 0.0000 | 0.0000 | 57 |
| neutral | 0.9306 | 1.0000 | 0.9640 | 67 |
| positive | 0.5938 | 1.0000 | 0.7451 | 76 |

#### Confusion matrix (validation)

![Confusion matrix (validation)](confusion_matrix_validation.png)

| true \\ predicted | negative | neutral | positive |
| --- | --- | --- | --- |
| negative | 0 | 5 | 52 |
| neutral | 0 | 67 | 0 |
| positive | 0 | 0 | 76 |

### Per class (test)

| class | precision | recall | F1 | support |
| --- | --- | --- | --- | --- |
| negative | 0.0000 | 0.0000 | 0.0000 | 104 |
| neutral | 0.9224 | 1.0000 | 0.9596 | 107 |
| positive | 0.4837 | 1.0000 | 0.6520 | 89 |

#### Confusion matrix (test)

![Confusion matrix (test)](confusion_matrix_test.png)

| true \\ predicted | negative | neutral | positive |
| --- | --- | --- | --- |
| negative | 0 | 9 | 95 |
| neutral | 0 | 107 | 0 |
| positive | 0 | 0 | 89 |"""


def test_results_section_holds_the_runs_numbers_as_the_card_formats_them():
    recipe, metrics, run, _ = fixture("text")
    assert section(render(recipe, metrics, run), "Results") == TEXT_RESULTS
    # Four decimals, but tiny values keep three significant digits; a metric a split lacks is an empty cell.
    metrics["validation"]["loss"] = 0.000123456
    del metrics["test"]["recall"]
    text = render(recipe, metrics, run)
    assert "| Loss | 0.000123 | 1.0719 |" in text and "| Recall (macro) | 0.6667 |  |" in text
    # The step comes from the checkpoint's name; without a selection metric or a best one, no sentence.
    metrics["train"]["best_checkpoint"] = None
    assert "\n\nThe weights are the best checkpoint by validation `f1`: 0.5697.\n\n" in render(recipe, metrics, run)
    recipe["training"]["metric_for_best_model"] = None
    assert "The weights are the best checkpoint" not in render(recipe, metrics, run)
    recipe["training"]["metric_for_best_model"] = "f1"
    metrics["train"]["best_metric"] = None
    assert "The weights are the best checkpoint" not in render(recipe, metrics, run)


def test_card_of_a_run_without_a_test_split():
    recipe, metrics, run, _ = fixture("text")
    del metrics["test"]
    recipe["data"]["splits"]["test"] = None
    run["splits"].pop("test")
    card = ModelCard(render(recipe, metrics, run, plots=PLOTS[:3], model_id="x"))
    assert [r.dataset_split for r in card.data.eval_results] == ["validation"] * 4
    assert "| metric | validation |\n| --- | --- |\n| Accuracy | 0.7150 |\n" in card.text
    assert "Per class (test)" not in card.text and "Confusion matrix (test)" not in card.text
    assert "| test |" not in section(card.text, "Training data")


@pytest.mark.parametrize("drawn", [list(c) for n in range(len(PLOTS) + 1) for c in itertools.combinations(PLOTS, n)],
                         ids=lambda c: "+".join(p.removesuffix(".png") for p in c) or "none")
def test_each_plot_is_linked_only_when_it_was_drawn(drawn):
    text = render(*fixture("text")[:3], plots=drawn)
    for name, link in LINKS.items():
        assert text.count(f"]({name})") == text.count(link) == (1 if name in drawn else 0), name
    # the confusion counts are a table either way
    assert text.count("| true \\ predicted | negative | neutral | positive |") == 2


def with_classes(n: int) -> tuple[dict, dict, dict]:
    """The text fixture with n classes: every class right 8 times, and mistaken once for the next class."""
    recipe, metrics, run, _ = fixture("text")
    labels = [f"class_{i:02d}" for i in range(n)]
    matrix = [[8 if j == i else 1 if j == (i + 1) % n else 0 for j in range(n)] for i in range(n)]
    for split in ("validation", "test"):
        metrics[split]["per_class"] = {label: {"precision": 8 / 9, "recall": 8 / 9, "f1": 8 / 9, "support": 9}
                                       for label in labels}
        metrics[split]["confusion_matrix"] = {"labels": labels, "matrix": matrix}
    run["labels"] = labels
    return recipe, metrics, run


@pytest.mark.parametrize("n", [20, 21, 25])
def test_confusion_table_for_up_to_20_classes_and_the_image_alone_beyond(n):
    text = render(*with_classes(n))
    labels = [f"class_{i:02d}" for i in range(n)]
    header = "| true \\ predicted | " + " | ".join(labels) + " |"
    first_row = "| class_00 | 8 | 1 | " + " | ".join(["0"] * (n - 2)) + " |"
    note = f"({n} classes: the counts are in `metrics.json`.)"
    if n <= 20:
        assert text.count(header) == text.count(first_row) == 2 and note not in text
        assert "It sorts texts into 20 classes: " + ", ".join(f"`{label}`" for label in labels) + ".\n" in text
    else:
        assert "| true \\ predicted" not in text and first_row not in text
        assert text.count(note) == 2
        shown = ", ".join(f"`{label}`" for label in labels[:20])
        assert f"It sorts texts into {n} classes: {shown}, ... ({n} in all).\n" in text
    assert text.count(LINKS["confusion_matrix_test.png"]) == 1  # the image is linked at any size
    assert text.count("| class_24 | 0.8889 | 0.8889 | 0.8889 | 9 |") == (2 if n == 25 else 0)  # per class: all


# --- usage -------------------------------------------------------------------------------------------------

PREDICT_LINE = ("From a local copy, `hf-finetune predict FOLDER INPUTS...` labels texts, files or images in batches, "
                "and `hf-finetune evaluate FOLDER --data FILE` scores it on new labelled data.")


@pytest.mark.parametrize("kind, model_id, timm_name", [
    ("text", None, None),
    ("text", "me/tiny-reviews", None),
    ("vision", None, "local-dir:outputs/quickstart_vision"),
    ("vision", "me/patterns", "hf-hub:me/patterns"),
])
def test_usage_section_loads_the_model_id(kind, model_id, timm_name):
    recipe, metrics, run, _ = fixture(kind)
    text = render(recipe, metrics, run, model_id=model_id)
    loaded = model_id or f"outputs/quickstart_{kind}"
    task, example = {"text": ("text-classification", '"A wonderful, moving film."'),
                     "vision": ("image-classification", '"path/to/image.jpg"')}[kind]
    expected = ["## How to use",
                f'```python\nfrom transformers import pipeline\nclassifier = pipeline("{task}", model="{loaded}")\n'
                f"print(classifier({example}, top_k=3))\n```"]
    if timm_name:
        expected.append(f'The files keep timm\'s layout too: `timm.create_model("{timm_name}", pretrained=True)` '
                        "loads the same network.")
    assert section(text, "How to use") == "\n\n".join([*expected, PREDICT_LINE])
    name = loaded.rsplit("/", 1)[-1]
    assert text.split("\n---\n\n", 1)[1].startswith(f"# {name}\n\n")
    assert ModelCard(text).data.to_dict()["model-index"][0]["name"] == name


def test_default_model_id_is_the_hub_repository_else_the_output_folder():
    recipe = fixture("text")[0]
    assert card_module.default_model_id(recipe) == "outputs/quickstart_text"
    recipe["hub"]["repo_id"] = "me/tiny-reviews"
    assert card_module.default_model_id(recipe) == "me/tiny-reviews"


# --- training procedure --------------------------------------------------------------------------------------

HEAD = "a new 3-way classification head (randomly initialised)"
PHASES = [{"phase": 0, "step": 0, "epoch": 0.0, "training": "head only", "trainable_blocks": 0,
           "trainable_params": 195},
          {"phase": 1, "step": 94, "epoch": 2.0, "training": "head + top 1 blocks (from encoder.layer.1 + pooler)",
           "trainable_blocks": 1, "trainable_params": 37827}]


@pytest.mark.parametrize("finetune, train, expected", [
    ({}, {}, f"Full fine-tuning: every weight of the backbone trains, under {HEAD}."),
    ({"strategy": "linear_probe"}, {},
     f"Linear probe: the backbone stays frozen (bit-identical to the base model); only {HEAD} trains."),
    ({"strategy": "linear_probe", "cache_features": True}, {},
     f"Linear probe: the backbone stays frozen (bit-identical to the base model); only {HEAD} trains, "
     "once per sample, on features cached in one pass."),
    ({"strategy": "gradual_unfreeze", "unfreeze_every": 2.0, "blocks_per_unfreeze": 2}, {"phases": PHASES},
     f"Gradual unfreezing: {HEAD} trains first, then backbone blocks from the top down, 2 more every 2.0000 "
     "epoch(s). Phases: from step 0, head only (195 parameters); from step 94, head + top 1 blocks "
     "(from encoder.layer.1 + pooler) (37,827 parameters)."),
    ({"strategy": "gradual_unfreeze", "unfreeze_every": 30.0, "unfreeze_unit": "step"}, {},
     f"Gradual unfreezing: {HEAD} trains first, then backbone blocks from the top down, 1 more every 30.0000 "
     "step(s)."),
    ({"strategy": "probe_then_full", "probe_epochs": 1.0}, {"phases": PHASES[:1]},  # one phase: not listed
     f"LP-FT: a linear probe of {HEAD} for 1.0000 epoch(s), then every weight of the backbone trains from the "
     "probed head."),
    ({"head_learning_rate": 0.002, "backbone_lr_scale": 0.5, "layer_decay": 0.75}, {},
     f"Full fine-tuning: every weight of the backbone trains, under {HEAD}. Learning rates: head learning rate "
     "0.0020, backbone at 0.5000 x the learning rate, layer-wise decay 0.7500 per block below the head."),
    ({"class_weights": "balanced"},
     {"class_weights": {"negative": 1.1695906432748537, "neutral": 0.9950248756218906, "positive": 0.8771929824561403}},
     f"Full fine-tuning: every weight of the backbone trains, under {HEAD}. Class-weighted loss: negative 1.17, "
     "neutral 0.995, positive 0.877."),
    ({"early_stopping_patience": 3}, {"stopped_early": True},
     f"Full fine-tuning: every weight of the backbone trains, under {HEAD}. Early stopping after 3 evaluations "
     "without improvement (it stopped early)."),
    ({"early_stopping_patience": 3}, {"stopped_early": False},
     f"Full fine-tuning: every weight of the backbone trains, under {HEAD}. Early stopping after 3 evaluations "
     "without improvement (it ran to the end)."),
], ids=["full", "linear_probe", "linear_probe_cached", "gradual_unfreeze", "gradual_by_steps", "probe_then_full",
        "learning_rates", "class_weights", "stopped_early", "ran_to_the_end"])
def test_strategy_paragraph(finetune, train, expected):
    recipe, metrics, run, _ = fixture("text")
    recipe["finetune"].update(finetune)
    metrics["train"].update(train)
    procedure = section(render(recipe, metrics, run), "Training procedure")
    assert procedure.split("\n\n")[1] == expected


TEXT_OUTCOME = """| outcome | value |
| --- | --- |
| optimizer steps | 141 |
| epochs | 3 |
| training loss | 1.09409 |
| training time (s) | 36.522 |
| samples per second | 123.213 |"""


def test_hyperparameters_and_outcome_tables():
    recipe, metrics, run, _ = fixture("text")
    procedure = section(render(recipe, metrics, run), "Training procedure")
    for row in ("| `learning_rate` | 0.0003 |", "| `num_train_epochs` | 3 |", "| `per_device_train_batch_size` | 32 |",
                "| `warmup_steps` | 0.1 |", "| `optim` | adamw_torch_fused |", "| `max_length (tokens)` | 64 |"):
        assert f"\n{row}\n" in procedure
    assert f"\n\n{TEXT_OUTCOME}\n\n" in procedure
    assert "resumed from" not in procedure and "max_steps" not in procedure  # None in the records
    metrics["train"]["resumed_from"] = "outputs/quickstart_text/checkpoints/checkpoint-94"
    run["training"]["max_steps"] = 200  # a value: shown; None values are left out
    procedure = section(render(recipe, metrics, run), "Training procedure")
    assert "| samples per second | 123.213 |\n| resumed from | checkpoint-94 |" in procedure
    assert "| `max_steps` | 200 |" in procedure


TEXT_INTRO = ("This model is a fine-tuned version of `examples/models/tiny-bert` for text classification, trained on "
              "local files (train: `train.csv`; validation: `validation.csv`; test: `test.csv`) with hf-finetune. "
              "It sorts texts into 3 classes: `negative`, `neutral`, `positive`.")
VISION_INTRO = ("This model is a fine-tuned version of `examples/models/tiny-resnet` for image classification, trained "
                "on the image folder `examples/data/patterns` with hf-finetune. It sorts images into 3 classes: "
                "`checkered`, `horizontal`, `vertical`.")
VISION_ROWS = ["| `image input_size` | [3, 64, 64] |", "| `image interpolation` | bilinear |",
               "| `image crop_pct` | 1 |", "| `image crop_mode` | center |", "| `image mean` | [0.5, 0.5, 0.5] |",
               "| `image std` | [0.5, 0.5, 0.5] |", "| `augmentation crop_scale` | [0.08, 1] |",
               "| `augmentation crop_ratio` | [0.75, 1.33333] |", "| `augmentation hflip` | 0.5 |",
               "| `augmentation vflip` | 0 |", "| `augmentation color_jitter` | 0.4 |",
               "| `augmentation random_erasing` | 0 |", "| `augmentation mixup` | 0 |", "| `augmentation cutmix` | 0 |",
               "| `augmentation mix_prob` | 1 |", "| `augmentation mix_switch_prob` | 0.5 |"]  # auto_augment: None


def test_vision_card_and_text_card():
    text_recipe, text_metrics, text_run, _ = fixture("text")
    text_recipe["augmentation"] = {"hflip": 0.5}  # not a text setting: never shown for text
    vision_recipe, vision_metrics, vision_run, _ = fixture("vision")
    text, vision = ModelCard(render(text_recipe, text_metrics, text_run)), ModelCard(render(*fixture("vision")[:3]))

    assert (text.data.pipeline_tag, vision.data.pipeline_tag) == ("text-classification", "image-classification")
    assert text.data.tags == ["hf-finetune", "text-classification"]
    assert vision.data.tags == ["hf-finetune", "image-classification", "timm"]
    assert {(r.dataset_type, r.dataset_name, r.task_name) for r in vision.data.eval_results} == {
        ("imagefolder", "patterns", "Image Classification")}
    assert {(r.dataset_split, r.metric_type): r.metric_value for r in vision.data.eval_results} == {
        (split, name): vision_metrics[split][name] for split in ("validation", "test") for name in METRIC_LABELS}

    assert TEXT_INTRO in text.text and VISION_INTRO in vision.text
    assert "Columns: text `text`, label `label`." in text.text and "Columns: image `image`, label `label`." in vision.text
    rows = [line for line in vision.text.splitlines() if line.startswith(("| `image ", "| `augmentation "))]
    assert rows == VISION_ROWS
    assert not [line for line in text.text.splitlines() if line.startswith(("| `image ", "| `augmentation "))]
    assert "| `max_length (tokens)` | 64 |" in text.text and "max_length" not in vision.text
    assert "timm.create_model" not in text.text and "timm.create_model" in vision.text
    assert "- timm 1.0.31" in vision.text and "timm" not in section(text.text, "Framework versions")
    assert "| Accuracy | 0.7167 | 0.7833 |" in vision.text

    assert "Unreadable images left out" not in vision.text
    vision_run["skipped_images"] = {"train": ["a.png: truncated", "b.png: not an image"], "test": []}
    skipped = render(vision_recipe, vision_metrics, vision_run)
    assert "Columns: image `image`, label `label`.\n\nUnreadable images left out: train 2, test 0.\n" in skipped


# --- write_report: the files it writes ----------------------------------------------------------------------

def report_records(kind: str) -> tuple[dict, dict, dict, list]:
    recipe, metrics, run, log = fixture(kind)
    run.pop("files")  # write_report gets run.json before the file list is known
    return recipe, metrics, run, log


def assert_report(folder: Path, written: list[str], records: tuple, expected: list[str]) -> None:
    recipe, metrics, run, log = records
    assert written == expected
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)  # nothing else, no temporary files
    assert json.loads((folder / "training_log.json").read_text()) == log
    drawn = [name for name in expected if name.endswith(".png")]
    assert (folder / "README.md").read_text() == render(recipe, metrics, run, plots=drawn)
    for name in drawn:
        assert (folder / name).read_bytes()[:8] == PNG_MAGIC


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory) -> tuple[Path, list[str]]:
    """write_report on the text records, once: the folder and the names it returned."""
    folder = tmp_path_factory.mktemp("report")
    return folder, card_module.write_report(folder, *report_records("text"))


def test_write_report_writes_the_log_the_plots_and_the_card(report_folder):
    assert_report(*report_folder, report_records("text"), REPORT_FILES)


def no_test_split(metrics, log):
    del metrics["test"]


def no_evaluations(metrics, log):
    log[:] = [e for e in log if "eval_loss" not in e]


def empty_log(metrics, log):
    log.clear()


@pytest.mark.parametrize("kind, change, missing", [
    ("vision", None, []),
    ("text", no_test_split, ["confusion_matrix_test.png"]),
    ("text", no_evaluations, ["validation_metrics.png"]),  # the loss plot still draws the training loss
    ("text", empty_log, ["training_loss.png", "validation_metrics.png"]),
], ids=["vision", "no_test_split", "no_evaluations", "empty_log"])
def test_write_report_leaves_out_what_cannot_be_drawn(tmp_path, kind, change, missing):
    records = report_records(kind)
    if change:
        change(records[1], records[3])
    assert_report(tmp_path, card_module.write_report(tmp_path, *records), records,
                  [name for name in REPORT_FILES if name not in missing])


@pytest.mark.parametrize("name", PLOTS)
def test_plots_are_pngs_of_a_sensible_size(report_folder, name):
    path = report_folder[0] / name
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert image.format == "PNG"
    assert 500 <= width <= 3000 and 400 <= height <= 3000
    assert path.stat().st_size > 5_000  # something was drawn


def test_a_plot_that_fails_leaves_the_card_and_the_other_plots(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no fonts today")

    monkeypatch.setattr(card_module, "plot_loss", broken)  # the name write_report calls
    with caplog.at_level(logging.WARNING, logger="hf_finetune"):
        written = card_module.write_report(tmp_path, *fixture("text"))
    assert written == [name for name in REPORT_FILES if name != "training_loss.png"]
    assert "Could not draw training_loss.png; the model card goes without it" in caplog.text
    assert not (tmp_path / "training_loss.png").exists() and (tmp_path / "validation_metrics.png").exists()
    text = (tmp_path / "README.md").read_text()
    assert "](training_loss.png)" not in text and LINKS["validation_metrics.png"] in text


def test_a_card_that_fails_leaves_the_log_and_the_plots(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise KeyError("labels")

    monkeypatch.setattr(card_module, "render_card", broken)
    with caplog.at_level(logging.ERROR, logger="hf_finetune"):
        written = card_module.write_report(tmp_path, *fixture("text"))
    assert written == REPORT_FILES[:-1]
    assert "Could not write the model card (README.md); the run goes on without it" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(REPORT_FILES[:-1])


def test_plots_that_have_nothing_to_draw_write_nothing(tmp_path):
    assert plots.plot_loss([], tmp_path / "nothing.png") is False
    assert plots.plot_validation_metrics([{"loss": 1.0, "step": 1}], ["accuracy"], "accuracy",
                                         tmp_path / "nothing.png") is False
    assert plots.plot_confusion_matrix({"accuracy": 1.0}, tmp_path / "nothing.png", "Confusion matrix") is False
    assert list(tmp_path.iterdir()) == []


# --- the card a real run writes --------------------------------------------------------------------------------

def test_the_card_a_run_writes_is_rendered_from_its_records(vision_run):
    recipe, metrics, run = records(vision_run)
    assert set(REPORT_FILES) <= set(run["files"])
    for name in PLOTS:
        assert (vision_run / name).read_bytes()[:8] == PNG_MAGIC
    # What push relies on: the card is the one its records render (push renders it again for the repository).
    text = (vision_run / "README.md").read_text()
    assert text == render(recipe, metrics, run, plots=PLOTS, model_id=recipe["output"]["dir"])
    card = ModelCard(text)
    assert {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results} == {
        (split, name): metrics[split][name] for split in ("validation", "test") for name in METRIC_LABELS}
    assert "| `image input_size` | [3, 32, 32] |" in text and "| `augmentation hflip` | 0.5 |" in text
    # 24 training images in batches of 8 for 2 epochs, a loss logged every step, an evaluation every epoch
    log = json.loads((vision_run / "training_log.json").read_text())
    assert sum("loss" in e for e in log) == 6 and [e["epoch"] for e in log if "eval_loss" in e] == [1.0, 2.0]


def test_the_vision_cards_code_runs(vision_run, tmp_path):
    text = (vision_run / "README.md").read_text()
    image = tmp_path / "stripes.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    code = text.split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(code.replace("path/to/image.jpg", str(image)).replace("print(", "answer = ("), "card", "exec"),
         namespace)
    assert sorted(a["label"] for a in namespace["answer"]) == ["checkered", "horizontal", "vertical"]
    import timm

    [line] = re.findall(r'`(timm\.create_model\("local-dir:[^`]+", pretrained=True\))`', text)
    assert eval(line, {"timm": timm}).num_classes == 3


@pytest.fixture(scope="module")
def short_text_run(tmp_path_factory, tiny_bert) -> tuple[Path, list[str]]:
    """A text run of one epoch (48 rows in batches of 16: 3 steps) and the messages hf_finetune logged."""
    folder = tmp_path_factory.mktemp("short-text-run")
    files = {split: str(write_csv(folder / "data" / f"{split}.csv", review_rows(n, seed=seed)))
             for split, n, seed in (("train", 48, 0), ("validation", 16, 1), ("test", 16, 2))}
    recipe = {"task": "text-classification", "model": {"name": str(tiny_bert)},
              "data": {"files": files, "cache_dir": str(folder / "cache")},
              "training": {"num_train_epochs": 1, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 16,
                           "learning_rate": 1.0e-3, "logging_steps": 1},
              "output": {"dir": str(folder / "out")}}

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.INFO)
            self.messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    logger, handler = logging.getLogger("hf_finetune"), Collect()
    level = logger.level
    logger.addHandler(handler)
    try:
        assert main(["train", str(write_recipe(folder / "recipe.yaml", recipe))]) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return folder / "out", handler.messages


def test_training_ends_with_the_summary_line(short_text_run):
    out, messages = short_text_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert messages[-1].startswith("Done in ") and messages[-1].endswith(f"samples/s | {out}")
    assert f"| test accuracy {metrics['test']['accuracy']:.3f} precision" in messages[-1]


def test_the_text_cards_code_runs_and_names_the_best_checkpoint(short_text_run):
    out, _ = short_text_run
    recipe, metrics, run = records(out)
    text = (out / "README.md").read_text()
    assert text == render(recipe, metrics, run, plots=PLOTS)
    assert f"The weights are the best checkpoint by validation `accuracy`: {metrics['train']['best_metric']:.4f} " \
           "(step 3)." in text
    code = text.split("```python\n")[1].split("```")[0]
    assert f'pipeline("text-classification", model="{out}")' in code
    namespace: dict = {}
    exec(compile(code.replace("print(", "answer = ("), "card", "exec"), namespace)
    assert sorted(a["label"] for a in namespace["answer"]) == ["neg", "pos"]


# --- parts that need no run --------------------------------------------------------------------------------------

def test_hub_ids_for_the_card(tmp_path, tiny_resnet):
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)

    def ids(**sections):
        raw = {"task": "image-classification", "data": {"image_folder": str(tmp_path / "imgs")}, **sections}
        return record.hub_ids(validate_recipe(raw))

    assert ids(model={"name": "resnet50.a1_in1k"}) == {"base_model": "timm/resnet50.a1_in1k", "dataset": None}
    assert ids(model={"name": "hf-hub:timm/vit_small_patch16_224.augreg_in21k"})["base_model"] == \
        "timm/vit_small_patch16_224.augreg_in21k"
    assert ids(model={"name": str(tiny_resnet)})["base_model"] is None
    assert ids(model={"name": str(tiny_resnet)}, card={"base_model": "timm/resnet18.a1_in1k", "dataset": "beans"}) \
        == {"base_model": "timm/resnet18.a1_in1k", "dataset": "beans"}
    assert ids(model={"name": "resnet50", "pretrained": False})["base_model"] is None


def _overlaps(boxes) -> list:
    return [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


@pytest.mark.parametrize("labels", [
    ["neg", "pos", "neutral"],
    ["checkered", "horizontal", "vertical"],
    [f"class_{i:02d}" for i in range(10)],
    [f"a rather long class name, number {i}" for i in range(20)],
])
def test_confusion_matrix_tick_labels_are_named_and_never_overlap(labels):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    n = len(labels)
    matrix = [[(i * 7 + j * 3) % 11 + (20 if i == j else 0) for j in range(n)] for i in range(n)]
    fig = plots.confusion_matrix_figure(matrix, labels, "Confusion matrix (test)")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted label" and ax.get_ylabel() == "true label"
    assert ax.get_title() == f"Confusion matrix (test), {sum(map(sum, matrix))} samples"
    xs, ys = ax.get_xticklabels(), ax.get_yticklabels()
    assert [t.get_text() for t in xs] == [t.get_text() for t in ys] == [plots.shorten(label) for label in labels]
    figure_box = fig.bbox
    for ticks in (xs, ys):
        assert not _overlaps([t.get_window_extent(renderer) for t in ticks])
    texts = [*xs, *ys, ax.xaxis.label, ax.yaxis.label, ax.title, fig.axes[1].yaxis.label]  # last: the colour bar's
    for box in (t.get_window_extent(renderer) for t in texts):  # nothing cut off at the figure's edge
        assert box.x0 >= figure_box.x0 - 1 and box.x1 <= figure_box.x1 + 1
        assert box.y0 >= figure_box.y0 - 1 and box.y1 <= figure_box.y1 + 1


def test_shorten_keeps_both_ends():
    assert plots.shorten("short") == "short"
    long = "Northern_Cardinal_adult_male_in_winter_plumage"
    assert plots.shorten(long) == "Northern_Cardi…inter_plumage"
    assert len(plots.shorten(long)) == 28


def test_summary_line_reads_at_a_glance():
    results = {
        "validation": {"accuracy": 0.9124, "f1": 0.9051, "loss": 0.3, "per_class": {}, "num_samples": 10},
        "test": {"accuracy": 0.9071, "f1": 0.8993, "loss": 0.31, "num_samples": 10},
        "train": {"samples_per_second": 411.7},
    }
    assert summary.summary_line(results, 72.4, "outputs/bert_sentiment") == (
        "Done in 1m12s | validation accuracy 0.912 f1 0.905 | test accuracy 0.907 f1 0.899 | 412 samples/s | "
        "outputs/bert_sentiment")
    assert summary.format_duration(7384) == "2h03m" and summary.format_duration(9.4) == "9s"
    del results["test"]
    results["train"]["samples_per_second"] = 3.14
    assert summary.summary_line(results, 5, "o") == "Done in 5s | validation accuracy 0.912 f1 0.905 | 3.1 samples/s | o"
