"""The model card, the plots and the summary line: valid for the Hub, readable, and holding the real numbers."""

from __future__ import annotations

import copy
import itertools
import json
import logging
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load
from PIL import Image

from hf_finetune.cli import main
from hf_finetune.recipe import validate_recipe
from hf_finetune.report import card as card_module
from hf_finetune.report import plots, record, summary

from .conftest import write_recipe

PLOTS = ["training_loss.png", "validation_metrics.png", "confusion_matrix_validation.png",
         "confusion_matrix_test.png"]


def records(out: Path) -> tuple[dict, dict, dict]:
    return (yaml.safe_load((out / "recipe.yaml").read_text()), json.loads((out / "metrics.json").read_text()),
            json.loads((out / "run.json").read_text()))


def test_card_is_a_hub_model_card_with_the_runs_numbers(text_run):
    recipe, metrics, run = records(text_run)
    assert {"README.md", "training_log.json", *PLOTS} <= set(run["files"])

    card = ModelCard.load(text_run / "README.md")
    assert card.data.pipeline_tag == "text-classification" and card.data.library_name == "transformers"
    assert "hf-finetune" in card.data.tags
    assert card.data.base_model is None and card.data.license is None  # local backbone, no license in the recipe
    meta = metadata_load(text_run / "README.md")
    assert meta["model-index"][0]["name"] == "out"
    found = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    expected = {(split, name): metrics[split][name]
                for split in ("validation", "test") for name in ("accuracy", "precision", "recall", "f1")}
    assert found == expected
    assert {r.task_type for r in card.data.eval_results} == {"text-classification"}
    assert all(r.metric_args == {"average": "macro"} for r in card.data.eval_results if r.metric_type == "f1")

    text = card.text
    for split in ("validation", "test"):
        m = metrics[split]
        for label, v in m["per_class"].items():
            assert f"| {label} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |" in text
        for label, row in zip(m["confusion_matrix"]["labels"], m["confusion_matrix"]["matrix"], strict=True):
            assert f"| {label} | " + " | ".join(map(str, row)) + " |" in text
        assert f"![Confusion matrix ({split})](confusion_matrix_{split}.png)" in text
    row = f"| Accuracy | {metrics['validation']['accuracy']:.4f} | {metrics['test']['accuracy']:.4f} |"
    assert row in text
    assert "| `learning_rate` | 0.001 |" in text and "| `per_device_train_batch_size` | 8 |" in text
    assert "| train | split 'train' | 48 |" in text
    assert "fine-tuned version of `" + recipe["model"]["name"] + "`" in text
    usage = ('from transformers import pipeline\n'
             f'classifier = pipeline("text-classification", model="{recipe["output"]["dir"]}")\n'
             'print(classifier("A wonderful, moving film.", top_k=3))')
    assert usage in text
    for name in ("training_loss.png", "validation_metrics.png"):
        assert f"]({name})" in text


def test_the_cards_usage_code_runs(text_run):
    code = ModelCard.load(text_run / "README.md").text.split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(code.replace("print(", "answer = ("), "card", "exec"), namespace)
    assert [a["label"] for a in namespace["answer"]] in (["neg", "pos"], ["pos", "neg"])


def test_card_metadata_names_hub_base_model_dataset_and_license(text_run):
    recipe, metrics, run = records(text_run)
    recipe["card"]["license"] = "apache-2.0"
    run["hub_ids"] = {"base_model": "google-bert/bert-base-uncased", "dataset": "stanfordnlp/imdb"}
    text = card_module.render_card(recipe, metrics, run, plots=[], model_id="me/bert-imdb")
    card = ModelCard(text)
    assert card.data.base_model == "google-bert/bert-base-uncased"
    assert card.data.datasets == ["stanfordnlp/imdb"] and card.data.license == "apache-2.0"
    assert {r.dataset_type for r in card.data.eval_results} == {"stanfordnlp/imdb"}
    assert card.data.to_dict()["model-index"][0]["name"] == "bert-imdb"
    assert "[google-bert/bert-base-uncased](https://huggingface.co/google-bert/bert-base-uncased)" in card.text
    assert 'pipeline("text-classification", model="me/bert-imdb")' in card.text
    assert "](training_loss.png)" not in card.text  # only plots that exist are linked


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


def test_vision_card_and_plots(vision_run):
    card = ModelCard.load(vision_run / "README.md")
    assert card.data.pipeline_tag == "image-classification" and "timm" in card.data.tags
    assert "| `image input_size` | [3, 32, 32] |" in card.text
    assert "| `augmentation hflip` | 0.5 |" in card.text
    out_dir = yaml.safe_load((vision_run / "recipe.yaml").read_text())["output"]["dir"]
    assert 'pipeline("image-classification"' in card.text
    assert f'timm.create_model("local-dir:{out_dir}", pretrained=True)' in card.text
    for name in PLOTS:
        assert (vision_run / name).is_file()


@pytest.mark.parametrize("name", PLOTS)
def test_plots_are_pngs_of_a_sensible_size(text_run, name):
    path = text_run / name
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert image.format == "PNG"
    assert 500 <= width <= 3000 and 400 <= height <= 3000
    assert path.stat().st_size > 5_000  # something was drawn


def test_loss_plot_has_both_curves_and_metric_plot_every_epoch(text_run):
    log = json.loads((text_run / "training_log.json").read_text())
    assert sum("loss" in e for e in log) == 48 and sum("eval_loss" in e for e in log) == 8  # 48 steps, 8 epochs
    assert plots.plot_loss([], text_run / "nothing.png") is False
    assert plots.plot_validation_metrics([{"loss": 1.0, "step": 1}], ["accuracy"], "accuracy",
                                          text_run / "nothing.png") is False
    assert not (text_run / "nothing.png").exists()


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
    assert ax.get_title().startswith("Confusion matrix (test)")
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
    assert len(plots.shorten(long)) == 28 and plots.shorten(long).startswith("Northern")
    assert plots.shorten(long).endswith("plumage")


def test_a_plot_that_fails_leaves_the_card_and_the_run_intact(tmp_path, text_recipe, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no fonts today")

    monkeypatch.setattr(card_module, "plot_loss", broken)  # the name write_report calls
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    with caplog.at_level(logging.WARNING, logger="hf_finetune"):
        assert main(["train", str(path)]) == 0
    out = tmp_path / "out"
    assert "Could not draw training_loss.png" in caplog.text
    assert not (out / "training_loss.png").exists() and (out / "validation_metrics.png").exists()
    text = (out / "README.md").read_text()
    assert "](training_loss.png)" not in text and "](validation_metrics.png)" in text


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


def test_training_ends_with_the_summary_line(tmp_path, text_recipe, caplog):
    text_recipe = copy.deepcopy(text_recipe)
    text_recipe["training"]["num_train_epochs"] = 1
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    with caplog.at_level(logging.INFO, logger="hf_finetune"):
        assert main(["train", str(path)]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    best = metrics["train"]["best_metric"]
    assert f"The weights are the best checkpoint by validation `accuracy`: {best:.4f} (step 3)." in \
        (tmp_path / "out" / "README.md").read_text()
    last = [r.getMessage() for r in caplog.records if r.name.startswith("hf_finetune")][-1]
    assert last.startswith("Done in ") and last.endswith(f"samples/s | {tmp_path / 'out'}")
    assert f"| test accuracy {metrics['test']['accuracy']:.3f} precision" in last


def test_card_of_a_run_without_a_test_split(text_run):
    recipe, metrics, run = records(text_run)
    del metrics["test"]
    recipe["data"]["splits"]["test"] = None
    run["splits"].pop("test")
    card = ModelCard(card_module.render_card(recipe, metrics, run, plots=PLOTS[:3], model_id="x"))
    assert {r.dataset_split for r in card.data.eval_results} == {"validation"}
    assert "| metric | validation |\n" in card.text and "Per class (test)" not in card.text
