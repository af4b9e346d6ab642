"""The vision path: timm backbones through the same recipes, data stage, run and outputs as text."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_finetune.cli import main
from hf_finetune.data import build_datasets
from hf_finetune.data.images import UnreadableImageError, decode_image, to_rgb
from hf_finetune.data.vision import build_image_transforms
from hf_finetune.errors import DataError, HubUnreachableError, ModelError
from hf_finetune.models.backbones import (
    build_vision_model,
    load_vision_config,
    resolve_vision_name,
    vision_data_config,
)
from hf_finetune.recipe import ModelSpec, validate_recipe
from hf_finetune.testing import PATTERNS, write_tiny_timm

from .conftest import write_recipe


def run_recipe(tmp_path: Path, recipe: dict) -> Path:
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    assert main(["train", str(path)]) == 0
    return Path(recipe["output"]["dir"])


def sample_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(4)]


@pytest.mark.parametrize("backbone", ["tiny_resnet", "tiny_vit"])
def test_vision_run_end_to_end(tmp_path, vision_recipe, backbone, request):
    vision_recipe["model"]["name"] = str(request.getfixturevalue(backbone))
    out = run_recipe(tmp_path, vision_recipe)

    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "recipe.yaml", "metrics.json", "run.json"} <= files
    metrics = json.loads((out / "metrics.json").read_text())
    for split, n in (("validation", 9), ("test", 9)):
        assert {"accuracy", "precision", "recall", "f1", "loss"} <= set(metrics[split])
        assert metrics[split]["confusion_matrix"]["labels"] == sorted(PATTERNS)
        assert metrics[split]["num_samples"] == n
    run = json.loads((out / "run.json").read_text())
    assert run["labels"] == sorted(PATTERNS)  # imagefolder's ClassLabel: class folders in sorted order
    assert run["preprocessing"]["image"]["input_size"] == [3, 32, 32]

    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] in ("test_resnet", "test_vit")
    assert config["label_names"] == sorted(PATTERNS) and config["num_classes"] == 3
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]


def test_output_loads_in_pipeline_and_in_timm_with_the_same_predictions(tmp_path, vision_recipe):
    import timm
    from transformers import AutoModelForImageClassification, pipeline

    out = run_recipe(tmp_path, vision_recipe)
    images = sample_images()
    classifier = pipeline("image-classification", model=str(out))
    answers = classifier(images, top_k=1)
    assert {a[0]["label"] for a in answers} <= set(PATTERNS)

    wrapped = AutoModelForImageClassification.from_pretrained(out).eval()
    native = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert native.num_classes == 3
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(native(pixels), wrapped(pixel_values=pixels).logits)


def test_transforms_follow_the_models_pretrained_config(tmp_path):
    cfg = {"input_size": [3, 256, 256], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
           "interpolation": "bicubic", "crop_pct": 0.9}
    path = write_tiny_timm(tmp_path / "m", "test_resnet", pretrained_cfg=cfg)
    data_config = vision_data_config(load_vision_config(ModelSpec(name=str(path))))
    assert data_config["input_size"] == (3, 256, 256)
    assert tuple(data_config["mean"]) == (0.5, 0.5, 0.5) and tuple(data_config["std"]) == (0.5, 0.5, 0.5)
    assert data_config["interpolation"] == "bicubic" and data_config["crop_pct"] == 0.9

    train_tf, eval_tf = build_image_transforms(data_config, {"color_jitter": 0.0})
    gray = Image.new("RGB", (300, 200), (127, 127, 127))
    evaluated = eval_tf(gray)
    assert evaluated.shape == (3, 256, 256)
    # (127/255 - 0.5) / 0.5: the model's own mean and std, not ImageNet's
    assert evaluated.mean().item() == pytest.approx((127 / 255 - 0.5) / 0.5, abs=1e-3)
    assert train_tf(gray).shape == (3, 256, 256)
    names = [type(t).__name__ for t in eval_tf.transforms]
    assert names[:2] == ["Resize", "CenterCrop"]
    assert eval_tf.transforms[0].size == int(256 / 0.9)
    assert eval_tf.transforms[0].interpolation.value == "bicubic"
    assert "RandomResizedCropAndInterpolation" in [type(t).__name__ for t in train_tf.transforms]


def test_csv_with_relative_image_paths(tmp_path, tiny_resnet, pattern_folder):
    rows = [{"path": str(p.relative_to(pattern_folder)), "kind": p.parent.name}
            for p in sorted(pattern_folder.glob("train/*/*.png"))]
    csv_path = pattern_folder / "train.csv"  # paths are relative to the csv file's folder
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "kind"])
        writer.writeheader()
        writer.writerows(rows)
    recipe = validate_recipe({
        "task": "image-classification", "model": {"name": str(tiny_resnet)},
        "data": {"files": {"train": str(csv_path)}, "columns": {"image": "path", "label": "kind"},
                 "validation_size": 6},
    })
    data = build_datasets(recipe, data_config=vision_data_config(load_vision_config(recipe.model)))
    assert data.labels.names == tuple(sorted(PATTERNS))
    assert data.sizes == {"train": 18, "validation": 6}
    item = data.splits["train"][0]
    assert item["pixel_values"].shape == (3, 32, 32) and 0 <= item["labels"] < 3
    batch = data.collator([data.splits["validation"][i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["labels"].dtype == torch.long


def _csv_recipe(tmp_path, tiny_resnet, rows, **data):
    csv_path = tmp_path / "images.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return validate_recipe({"task": "image-classification", "model": {"name": str(tiny_resnet)},
                            "data": {"files": {"train": str(csv_path)}, "validation_size": 2, **data}})


def _prepare(recipe):
    return build_datasets(recipe, data_config=vision_data_config(load_vision_config(recipe.model)))


def test_image_column_that_holds_no_images_is_named(tmp_path, tiny_resnet):
    rows = [{"image": i, "label": i % 2} for i in range(6)]
    with pytest.raises(DataError, match="data.columns.image: column 'image' of split 'train' holds Value"):
        _prepare(_csv_recipe(tmp_path, tiny_resnet, rows))
    rows = [{"image": f"a lovely caption {i}", "label": i % 2} for i in range(6)]
    with pytest.raises(DataError) as info:
        _prepare(_csv_recipe(tmp_path, tiny_resnet, rows))
    assert "6 of 6 rows name no existing file (does this column hold image file paths?)" in str(info.value)
    assert "row 0: 'a lovely caption 0'" in str(info.value)


def _spoil(pattern_folder: Path) -> list[Path]:
    """Truncates one image and replaces another with text, both past the images pre-flight samples."""
    truncated = sorted((pattern_folder / "train" / "vertical").glob("*.png"))[0]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    not_image = sorted((pattern_folder / "train" / "horizontal").glob("*.png"))[3]
    not_image.write_text("this is not a PNG")
    return [truncated, not_image]


def test_preflight_decodes_a_sample_of_images(tmp_path, vision_recipe, pattern_folder, capsys):
    first = sorted((pattern_folder / "validation" / "checkered").glob("*.png"))[0]
    first.write_text("not an image")
    path = write_recipe(tmp_path / "recipe.yaml", vision_recipe)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "data.columns.image: images of split 'validation' do not decode" in err
    assert f"row 0: unreadable image {first}" in err and "data.bad_images: skip" in err


def test_bad_images_stop_the_run_with_their_paths(tmp_path, vision_recipe, pattern_folder, capsys):
    bad = _spoil(pattern_folder)
    path = write_recipe(tmp_path / "recipe.yaml", vision_recipe)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2 unreadable images in split 'train' (set data.bad_images: skip to train without them)" in err
    for p in bad:
        assert str(p) in err
    assert not (tmp_path / "out" / "run.json").exists()


def test_bad_images_can_be_skipped_and_are_counted(tmp_path, vision_recipe, pattern_folder):
    bad = _spoil(pattern_folder)
    vision_recipe["data"]["bad_images"] = "skip"
    out = run_recipe(tmp_path, vision_recipe)
    run = json.loads((out / "run.json").read_text())
    assert run["splits"]["train"]["rows"] == 24 - 2
    skipped = run["skipped_images"]["train"]
    assert len(skipped) == 2 and all(any(str(p) in line for line in skipped) for p in bad)


def test_unverified_bad_image_fails_in_the_loader_with_its_path(tmp_path, vision_recipe, pattern_folder):
    bad = _spoil(pattern_folder)
    vision_recipe["data"]["verify_images"] = False
    recipe = validate_recipe(vision_recipe)
    data = _prepare(recipe)
    train = data.splits["train"]
    with pytest.raises(UnreadableImageError) as info:
        for i in range(len(train)):
            train[i]
    assert any(str(p) in str(info.value) for p in bad)


def test_image_modes_become_rgb_as_a_person_sees_them(tmp_path):
    gray = Image.new("L", (4, 4), 100)
    assert to_rgb(gray).getpixel((0, 0)) == (100, 100, 100)
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)  # shows as white, not black
    half = Image.new("LA", (4, 4), (0, 128))
    assert to_rgb(half).getpixel((0, 0))[0] == pytest.approx(127, abs=1)
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))  # 16-bit white
    assert to_rgb(deep).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30] * 256)
    palette.info["transparency"] = 1
    assert to_rgb(palette).getpixel((0, 0)) == (10, 20, 30)
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path)
    assert decode_image(str(path)).mode == "RGB"
    assert decode_image({"bytes": path.read_bytes(), "path": None}).size == (4, 4)


def test_vision_model_names(tmp_path, tiny_resnet):
    assert resolve_vision_name(ModelSpec(name="test_resnet", pretrained=False)) == ("test_resnet", "test_resnet")
    assert resolve_vision_name(ModelSpec(name=f"hf-hub:{tiny_resnet}"))[0] == str(tiny_resnet)
    assert resolve_vision_name(ModelSpec(name="timm/resnet50.a1_in1k")) == ("timm/resnet50.a1_in1k", None)
    assert resolve_vision_name(ModelSpec(name="resnet50")) == ("timm/resnet50.a1_in1k", "resnet50")
    with pytest.raises(ModelError, match="did you mean 'resnet50'"):
        resolve_vision_name(ModelSpec(name="resnet5O"))
    with pytest.raises(HubUnreachableError, match="model.name: 'timm/resnet50.a1_in1k' is not a local path"):
        load_vision_config(ModelSpec(name="resnet50"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        load_vision_config(ModelSpec(name=str(empty)))


def test_architecture_name_without_weights_builds_from_timms_config():
    from hf_finetune.data.labels import LabelSpace

    labels = LabelSpace(names=("a", "b"), values=("a", "b"))
    spec = ModelSpec(name="test_resnet", pretrained=False)
    model = build_vision_model(spec, labels)
    assert model.config.id2label == {0: "a", 1: "b"} and model.timm_model.num_classes == 2
    assert vision_data_config(load_vision_config(spec))["input_size"] == (3, 160, 160)  # timm's test_resnet
    assert model.config.pretrained_cfg["input_size"] in ((3, 160, 160), [3, 160, 160])
