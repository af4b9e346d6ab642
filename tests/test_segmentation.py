"""semantic-segmentation: masks and their checks, metrics, the recipe, a tiny UperNet end to end (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hf_finetune
from hf_finetune.errors import DataError, RecipeError
from hf_finetune.metrics.segmentation import (
    SegmentationMetrics,
    add_segmentation_baselines,
    confusion,
    figures,
)
from hf_finetune.testing import SHAPE_CLASSES, write_shape_masks

from .helpers.launch import two_process_launch

SIZE = 32  # pixels: the tiny run trains and evaluates at this size


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_shape_masks(tmp_path_factory.mktemp("shapes"), {"train": 24, "validation": 8, "test": 8}, size=SIZE)


def seg_recipe(folder: Path, model: Path, out: Path, **data) -> dict:
    return {"task": "semantic-segmentation", "model": {"name": str(model)},
            "data": {"image_folder": str(folder), "label_names_file": str(folder / "classes.txt"),
                     "image_size": SIZE, **data},
            "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8},
            "output": {"dir": str(out)}}


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory, tiny_resnet, shapes) -> Path:
    out = tmp_path_factory.mktemp("runs") / "seg"
    hf_finetune.train(seg_recipe(shapes, tiny_resnet, out))
    return out


# --- metrics ---------------------------------------------------------------------------------------------


def test_iou_dice_and_pixel_accuracy_by_hand():
    true = np.array([[[0, 0, 1, 1], [0, 0, 1, -100]]])
    pred = np.array([[[0, 1, 1, 1], [0, 0, 2, 2]]])  # the ignored pixel's prediction does not count
    report = SegmentationMetrics([], ["a", "b", "c"]).report(pred, true)
    # a: hit 3, true 4, pred 3 -> IoU 3/4; b: hit 2, true 3, pred 3 -> 2/4; c: hit 0, pred 1 -> 0
    assert report["per_class"]["a"]["iou"] == pytest.approx(0.75)
    assert report["per_class"]["b"]["iou"] == pytest.approx(0.5)
    assert report["per_class"]["c"]["iou"] == 0.0
    assert report["mean_iou"] == pytest.approx((0.75 + 0.5 + 0) / 3)
    assert report["pixel_accuracy"] == pytest.approx(5 / 7)
    assert report["per_class"]["a"]["dice"] == pytest.approx(6 / 7)
    assert report["counted"] == {"pixels": 7}
    # a class neither true nor predicted is left out of the means
    assert figures(confusion(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), 3))["mean_iou"] == 1.0


def test_majority_baseline_and_collapse_warning():
    names = ["sky", "sea"]
    true = np.array([[[0, 0, 0, 1]]])
    report = SegmentationMetrics([], names).report(np.zeros_like(true), true)
    results = {"test": report}
    warnings = add_segmentation_baselines(results, np.array([30, 10]))
    base = report["majority_baseline"]
    assert base["name"] == "sky" and base["mean_iou"] == pytest.approx(0.375) and base["pixel_accuracy"] == 0.75
    assert len(warnings) == 1 and "predicts 'sky' for 100.0% of the test pixels" in warnings[0]
    good = SegmentationMetrics([], names).report(true, true)
    assert add_segmentation_baselines({"test": good}, np.array([30, 10])) == []


# --- masks and their checks ------------------------------------------------------------------------------


def test_a_palette_png_gives_its_indices_and_a_colour_mask_is_refused(tmp_path):
    from hf_finetune.data.masks import read_mask

    ids = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    palette.save(tmp_path / "p.png")
    assert read_mask(str(tmp_path / "p.png")).tolist() == [[0, 1], [2, 255]]
    Image.fromarray(np.dstack([ids * 0 + 200, ids, ids])).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb.png is a RGB image in colour: a mask holds class ids"):
        read_mask(str(tmp_path / "rgb.png"))


def test_image_and_mask_move_together():
    import torch

    from hf_finetune.data.masks import MaskTransform, build_mask_transforms

    # the image's red channel is 100 x the class id: after crops, flips and resizes they must still agree
    ids = np.zeros((40, 40), dtype=np.uint8)
    ids[:, 20:] = 1
    ids[30:, :] = 2
    ids[0, 0] = 255
    image = Image.fromarray(np.dstack([ids * 100, ids * 0, ids * 0]).astype(np.uint8))
    train, _ = build_mask_transforms((24, 24), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), augment=True)
    transform = MaskTransform("image", "mask", train, ignore_index=255)
    torch.manual_seed(0)
    for _ in range(10):
        pixels, mask = transform.pair(image, Image.fromarray(ids))
        assert pixels.shape == (3, 24, 24) and mask.shape == (24, 24) and mask.dtype == torch.long
        scored = mask >= 0
        red = (pixels[0] * 255 / 100).round().long()
        agree = (red[scored] == mask[scored]).float().mean().item()
        assert agree > 0.9  # borders blur in the bilinear image, never in the nearest-neighbour mask
        assert set(mask.unique().tolist()) <= {-100, 0, 1, 2}


def _break(folder: Path, split: str, name: str, array: np.ndarray | None, raw: bytes | None = None) -> Path:
    path = folder / "masks" / split / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        Image.fromarray(array, mode="L").save(path)
    return path


@pytest.mark.parametrize("case", ["size", "class", "unreadable"])
def test_preflight_names_the_bad_mask_before_training(tmp_path, tiny_resnet, case):
    folder = write_shape_masks(tmp_path / "shapes", {"train": 4, "validation": 2}, size=16)
    if case == "size":
        bad = _break(folder, "validation", "1.png", np.zeros((12, 16), dtype=np.uint8))
        message = r"1 masks in split 'validation' differ in size from their image:\n    .*1.png is 16x12, its image"
    elif case == "class":
        bad = _break(folder, "train", "2.png", np.full((16, 16), 7, dtype=np.uint8))
        message = r"hold class ids outside the label space 0..2 .*\n    .*2.png holds 7"
    else:
        bad = _break(folder, "train", "0.png", None, raw=b"not a png")
        message = r"1 unreadable masks or images in split 'train':\n    unreadable mask .*0.png"
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message) as caught:
        hf_finetune.check(seg_recipe(folder, tiny_resnet, out))
    assert str(bad) in str(caught.value) and str(caught.value).startswith("data.columns.mask: ")
    with pytest.raises(DataError):
        hf_finetune.train(seg_recipe(folder, tiny_resnet, out))
    assert not (out / "run.json").exists()


def test_csv_lists_of_images_and_masks_and_class_ids_from_the_masks(tmp_path, tiny_resnet):
    folder = write_shape_masks(tmp_path / "shapes", {"train": 6, "validation": 2}, size=16)
    for split in ("train", "validation"):
        rows = [f"images/{split}/{i}.png,masks/{split}/{i}.png" for i in range(6 if split == "train" else 2)]
        (folder / f"{split}.csv").write_text("picture,target\n" + "\n".join(rows) + "\n")
    recipe = {"task": "semantic-segmentation", "model": {"name": str(tiny_resnet)},
              "data": {"files": {s: str(folder / f"{s}.csv") for s in ("train", "validation")},
                       "columns": {"image": "picture", "mask": "target"}}, "output": {"dir": str(tmp_path / "o")}}
    from hf_finetune.preflight import preflight

    report = preflight(hf_finetune.check(recipe, data=False))
    assert report.labels == ["0", "1", "2"]  # no names given: ids 0..the largest seen


def test_recipe_checks_for_the_task(tmp_path, tiny_resnet, shapes, text_recipe):
    recipe = seg_recipe(shapes, tiny_resnet, tmp_path / "o")
    with pytest.raises(RecipeError) as caught:
        hf_finetune.check({**recipe, "augmentation": {"hflip": 0.0}, "finetune": {"strategy": "lora"},
                           "data": {**recipe["data"], "columns": {"label": "y"}}}, data=False)
    message = str(caught.value)
    assert "augmentation: only applies to task: image-classification" in message
    assert "finetune.strategy: task semantic-segmentation does not support lora" in message
    assert "data.columns.label: semantic-segmentation reads each pixel's class from data.columns.mask" in message
    text_recipe["data"]["ignore_index"] = 0
    with pytest.raises(RecipeError, match="data.ignore_index: only applies to task: semantic-segmentation"):
        hf_finetune.check(text_recipe, data=False)
    resolved = hf_finetune.check(recipe, data=False)
    assert resolved.training["metric_for_best_model"] == "mean_iou"
    assert resolved.to_dict()["data"]["columns"] == {"image": "image", "mask": "mask"}


# --- end to end on a tiny UperNet ------------------------------------------------------------------------


def test_the_run_saves_a_upernet_folder_with_its_card(seg_run):
    config = json.loads((seg_run / "config.json").read_text())
    assert config["architectures"] == ["UperNetForSemanticSegmentation"]
    assert config["backbone_config"]["model_type"] == "timm_backbone" and config["loss_ignore_index"] == 255
    assert list(config["id2label"].values()) == list(SHAPE_CLASSES)
    processor = json.loads((seg_run / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": SIZE, "width": SIZE} and processor["do_reduce_labels"] is False
    metrics = json.loads((seg_run / "metrics.json").read_text())
    test = metrics["test"]
    assert 0 <= test["mean_iou"] <= 1 and set(test["per_class"]) == set(SHAPE_CLASSES)
    assert test["majority_baseline"]["name"] == "background" and metrics["figures"] == ["predictions_validation.png"]
    card = (seg_run / "README.md").read_text()
    assert "| class | IoU | Dice | support |" in card and "![predictions_validation.png]" in card
    assert "painting every pixel the largest training class ('background')" in card
    assert Image.open(seg_run / "predictions_validation.png").size[0] > 300


def test_the_folder_loads_in_transformers_without_remote_code(seg_run, shapes):
    from transformers import AutoModelForSemanticSegmentation, pipeline

    model = AutoModelForSemanticSegmentation.from_pretrained(seg_run)
    assert type(model).__name__ == "UperNetForSemanticSegmentation"
    segments = pipeline("image-segmentation", model=str(seg_run))(str(shapes / "images" / "test" / "0.png"))
    assert segments and {s["label"] for s in segments} <= set(SHAPE_CLASSES)
    assert all(s["mask"].size == (SIZE, SIZE) for s in segments)


def test_evaluate_scores_the_test_split_and_new_folders_as_the_run_did(seg_run, tmp_path):
    from hf_finetune.finished.evaluate import evaluate_output, format_evaluation

    evaluation = evaluate_output(seg_run)
    metrics = json.loads((seg_run / "metrics.json").read_text())
    assert evaluation.report["mean_iou"] == pytest.approx(metrics["test"]["mean_iou"], abs=1e-9)
    assert evaluation.report["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-4)
    assert "background" in format_evaluation(evaluation) and "iou" in format_evaluation(evaluation)
    new = write_shape_masks(tmp_path / "new", {"test": 3}, size=40, seed=9)  # another size: resized as trained
    other = evaluate_output(seg_run, data=str(new), output_dir=tmp_path / "eval")
    assert other.report["source"]["rows"] == 3 and (tmp_path / "eval" / "evaluation-new-test.json").is_file()


def test_predict_writes_a_mask_png_per_image_and_overlays(seg_run, shapes, tmp_path, capsys):
    from hf_finetune.cli import main

    images = shapes / "images" / "test"
    assert main(["predict", str(seg_run), str(images), "--output", str(tmp_path / "masks"), "--overlay"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8 and "%" in lines[0]
    mask = Image.open(tmp_path / "masks" / "0.png")
    assert mask.mode == "P" and mask.size == (SIZE, SIZE) and np.asarray(mask).max() < len(SHAPE_CLASSES)
    assert Image.open(tmp_path / "masks" / "0_overlay.png").size == (SIZE, SIZE)
    listed = [json.loads(line) for line in (tmp_path / "masks" / "predictions.jsonl").read_text().splitlines()]
    assert len(listed) == 8 and listed[0]["mask"] == "0.png" and listed[0]["overlay"] == "0_overlay.png"
    assert abs(sum(listed[0]["shares"].values()) - 1) < 1e-6
    assert main(["predict", str(seg_run), str(images / "0.png"), "--output", str(tmp_path / "p.jsonl")]) == 2
    assert "a segmentation model writes a mask PNG per image; name a folder" in capsys.readouterr().err


def test_a_frozen_encoder_trains_only_the_decoder_with_balanced_pixel_weights(tmp_path, tiny_resnet, shapes):
    result = hf_finetune.train(seg_recipe(shapes, tiny_resnet, tmp_path / "probe"), finetune__strategy="linear_probe",
                               finetune__class_weights="balanced", training__num_train_epochs=1)
    weights = __import__("yaml").safe_load((result.output_dir / "recipe.yaml").read_text())["finetune"]["class_weights"]
    assert weights["background"] < 1 < weights["disc"]  # n / (classes x pixels of the class), from the training masks
    from transformers import AutoModelForSemanticSegmentation

    phase = result.metrics["train"]["phases"][0]
    decoder = AutoModelForSemanticSegmentation.from_pretrained(result.output_dir).decode_head
    assert phase["training"] == "head only"
    assert phase["trainable_params"] == sum(p.numel() for p in decoder.parameters())


def test_onnx_export_with_parity_and_predict_from_it(seg_run, shapes, tmp_path):
    from hf_finetune.finished.export import export_onnx, load_onnx_predictor
    from hf_finetune.finished.masks import predict_masks
    from hf_finetune.predictor import Item, load_predictor

    result = export_onnx(seg_run, output_dir=tmp_path / "onnx")
    assert result.max_abs_diff <= 1e-4 and result.argmax_agreement == 1.0  # per pixel, over classes
    items = [Item(str(p)) for p in sorted((shapes / "images" / "test").glob("*.png"))[:3]]
    onnx = predict_masks(load_onnx_predictor(seg_run, result.path), items)
    torch_masks = predict_masks(load_predictor(seg_run), items)
    assert all((a["mask"] == b["mask"]).all() for a, b in zip(onnx, torch_masks, strict=True))


def test_layer_decay_gives_the_encoder_blocks_falling_rates(tmp_path, tiny_resnet, shapes):
    result = hf_finetune.train(seg_recipe(shapes, tiny_resnet, tmp_path / "decay"), finetune__layer_decay=0.5,
                               training__max_steps=1, finetune__data_aware=False, training__learning_rate=1e-3)
    rates = {g["name"]: g["lr"] for g in result.metrics["train"]["param_groups"]}
    assert rates["head"] == pytest.approx(1e-3)
    assert rates["layer4"] == pytest.approx(5e-4) and rates["layer3"] == pytest.approx(2.5e-4)
    assert rates["conv1"] < rates["layer1"] < rates["layer2"]


def test_a_saved_dataset_with_image_and_mask_columns(tmp_path, tiny_resnet):
    from datasets import Dataset, DatasetDict
    from datasets import Image as ImageFeature

    folder = write_shape_masks(tmp_path / "shapes", {"train": 4, "validation": 2}, size=16)

    def split(name: str, n: int) -> Dataset:
        ds = Dataset.from_dict({"img": [str(folder / "images" / name / f"{i}.png") for i in range(n)],
                                "seg": [str(folder / "masks" / name / f"{i}.png") for i in range(n)]})
        return ds.cast_column("img", ImageFeature()).cast_column("seg", ImageFeature())

    DatasetDict({"train": split("train", 4), "validation": split("validation", 2)}).save_to_disk(tmp_path / "saved")
    recipe = {"task": "semantic-segmentation", "model": {"name": str(tiny_resnet)},
              "data": {"dataset": str(tmp_path / "saved"), "columns": {"image": "img", "mask": "seg"},
                       "label_names": list(SHAPE_CLASSES)}, "output": {"dir": str(tmp_path / "o")}}
    from hf_finetune.preflight import preflight

    assert preflight(hf_finetune.check(recipe, data=False)).labels == list(SHAPE_CLASSES)


def test_tune_searches_on_validation_mean_iou(tmp_path, tiny_resnet, shapes):
    pytest.importorskip("optuna")
    from hf_finetune.cli import main

    from .conftest import write_recipe

    recipe = seg_recipe(shapes, tiny_resnet, tmp_path / "tune")
    recipe["data"]["max_samples"] = {"train": 8, "validation": 4, "test": 4}
    recipe["training"]["num_train_epochs"] = 1
    recipe["search"] = {"space": {"training.learning_rate": {"choices": [1e-3, 3e-3]}}, "trials": 2,
                        "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"}}
    assert main(["tune", str(write_recipe(tmp_path / "tune.yaml", recipe))]) == 0
    summary = json.loads((tmp_path / "tune" / "best" / "search.json").read_text())
    assert summary["objective"]["metric"] == "validation mean_iou" and summary["objective"]["direction"] == "maximize"
    with pytest.raises(RecipeError, match="search.objective.metric: 'f1' is not produced by this run; it produces "
                                          "loss, mean_dice, mean_iou, pixel_accuracy"):
        hf_finetune.check({**recipe, "search": {**recipe["search"], "objective": {"metric": "f1"}}}, data=False)


@pytest.mark.parametrize("finetune", [{"strategy": "probe_then_full", "probe_epochs": 1},
                                      {"strategy": "gradual_unfreeze", "unfreeze_every": 1}], ids=["lp-ft", "gradual"])
def test_strategies_that_change_what_trains(tmp_path, tiny_resnet, shapes, finetune):
    recipe = seg_recipe(shapes, tiny_resnet, tmp_path / "run")
    recipe["data"]["max_samples"] = {"train": 8, "validation": 4, "test": 4}  # a few rows: phases, not scores
    recipe["finetune"] = finetune
    result = hf_finetune.train(recipe)
    phases = result.metrics["train"]["phases"]
    assert phases[0]["training"] == "head only" and len(phases) >= 2
    assert phases[-1]["trainable_params"] > phases[0]["trainable_params"]


@pytest.mark.slow
def test_two_processes_train_a_segmentation_run(tmp_path, tiny_resnet, shapes):
    """cpu_ddp.yaml (accelerate, gloo): the run finishes once, with the global batch split over 2 processes."""
    import subprocess

    from .conftest import write_recipe

    recipe = seg_recipe(shapes, tiny_resnet, tmp_path / "two")
    recipe["batch"] = {"global_size": 8}
    recipe["training"].update(per_device_train_batch_size=8, num_train_epochs=1)
    repo = Path(hf_finetune.__file__).resolve().parent.parent
    command = two_process_launch("hf_finetune/run.py", str(write_recipe(tmp_path / "two.yaml", recipe)))
    launched = subprocess.run(command, capture_output=True, text=True, cwd=repo, timeout=600)
    assert launched.returncode == 0, launched.stderr[-4000:]
    output = launched.stdout + launched.stderr
    assert output.count("Done in") == 1
    assert output.count("Batch: 8 samples per optimizer step = 2 processes x 4 per device") == 1
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["validation"]["counted"]["pixels"] > 0 and metrics["train"]["batch"]["processes"] == 2
