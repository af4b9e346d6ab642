"""semantic-segmentation: a class per pixel, on a timm backbone's feature maps under a UperNet decoder.

    inputs      an image and a mask per row (`data.columns.image`, `data.columns.mask`): image and mask
                folders (data.image_folder + data.mask_folder, or one folder holding images/ and masks/),
                csv / json files listing both paths, saved or Hub datasets with an image and a mask column
    labels      masks are PNGs of class ids (palette PNGs: their indices); class names from
                data.label_names or data.label_names_file, else ids 0..largest seen; data.ignore_index
                (255) is skipped by the loss and the metrics (data/masks.py)
    model       UperNetForSemanticSegmentation over transformers' TimmBackbone (models/segmentation.py),
                the backbone's pretrained weights loaded from a local timm folder or the Hub; saved with a
                SegformerImageProcessor (the backbone's mean and std), so the folder loads in
                AutoModelForSemanticSegmentation and pipeline("image-segmentation") without remote code
    metrics     mean IoU (selection), pixel accuracy, mean Dice, per-class IoU and Dice; baseline: every
                pixel the largest training class; collapse warning (metrics/segmentation.py)
    predict     a mask PNG per image (class ids, full image size), optionally an overlay (finished/masks.py)

Served and tested (tests/test_segmentation.py): full fine-tuning, linear_probe (the decoder alone on a
frozen encoder), probe_then_full, gradual_unfreeze (the encoder's stages from the top), layer_decay, the
decoder's own rate (finetune.head_learning_rate), class weights from the training pixels, ONNX export
(parity per pixel; predict --onnx writes the same masks), tune (on validation mean IoU).
Refused by `check`, naming the task, until each is built and tested for masks:
    rank                      frozen-feature scores (LogME, k-NN, probe) read one vector per image, not per pixel
    ensemble, soup            predictions are averaged as class probabilities per image (predictor.py)
    distill, self_training    teachers and pseudo-labels are per image; per-pixel ones are not built
    lora                      no peft task type for a convolutional decoder
    cache_features            a probe on one cached vector per image
"""

from __future__ import annotations

import logging
from typing import Any

from hf_finetune.data.masks import MaskLabeling
from hf_finetune.tasks.base import CardWords, Preprocessing, Task, TaskProblem
from hf_finetune.tasks.image import ImageInputs

logger = logging.getLogger(__name__)

EXAMPLES_DRAWN = 4  # validation images in the card's figure

# AdamW rates measured on the texture mosaics (benchmarks/segmentation.py): a pretrained BatchNorm encoder
# at CNN_LR as in classification; the new decoder trains with it (finetune.head_learning_rate otherwise).
MASK_CNN_LR = 1e-3


class MaskInputs(ImageInputs):
    """An image and its mask per row: what semantic segmentation reads."""

    kind = "masks"
    input_keys = ("image",)
    label_key = "mask"
    sections = frozenset()  # no timm augmentation section: image and mask move together (data/masks.py)
    defaults = frozenset()  # no flip test (classification's mirror probe), no probe
    folder_key = "image_folder"
    teacher_cached = False

    def check_columns(self, splits: dict[str, Any], recipe: Any, names: dict[str, str]) -> None:
        """The first images decode (the masks are read in full with the labels: MaskLabeling.preflight)."""
        super().check_columns(splits, recipe, names)

    def preprocessing(self, recipe: Any, *, augment: bool = True, pad_to_multiple_of: int | None = None
                      ) -> Preprocessing:
        """Images and masks at the model's size (data.image_size, else the backbone's input size), normalised
        by the backbone's own mean and std; the image processor pipeline() will use, saved with the model."""
        from hf_finetune.data.masks import MaskEncoding
        from hf_finetune.models.backbones import load_vision_config, vision_data_config
        from hf_finetune.models.segmentation import build_image_processor

        data_config = vision_data_config(load_vision_config(recipe.model))
        side = recipe.data.image_size
        size = (side, side) if side else tuple(int(v) for v in data_config["input_size"][-2:])
        encoding = MaskEncoding(size, tuple(data_config["mean"]), tuple(data_config["std"]), augment)
        processor = build_image_processor(size, data_config)
        record = {"image": data_config, "size": list(size), "ignore_index": recipe.data.ignore_index}
        decided = {"data": {"image_size": size[0]}} if size[0] == size[1] else {}
        return Preprocessing(encoding, processor, record, decided, verb="reading images and masks")

    def build_backbone(self, spec: Any, labels: Any, tokenizer: Any = None) -> Any:
        from hf_finetune.models.segmentation import build_segmentation_model

        return build_segmentation_model(spec, labels)

    def finish_model(self, recipe: Any, model: Any, prep: Preprocessing, data: Any) -> dict[str, Any]:
        model.config.loss_ignore_index = recipe.data.ignore_index  # what users' masks mark, for the model's own loss
        return {}

    def recognises(self, config: dict[str, Any]) -> bool:
        return config.get("model_type") == "upernet"

    def preprocessor(self, folder: Any, config: Any, recipe: dict[str, Any], max_length: int | None = None,
                     **kwargs: Any) -> dict[str, Any]:
        """The saved image processor (what pipeline() uses)."""
        from transformers import AutoImageProcessor

        return {"tokenizer": AutoImageProcessor.from_pretrained(folder, local_files_only=True)}

    def finished_encoding(self, predictor: Any) -> Any:
        """Evaluation transforms at the saved processor's size, mean and std."""
        from hf_finetune.data.masks import MaskEncoding

        proc = predictor.tokenizer
        size = (int(proc.size["height"]), int(proc.size["width"]))
        return MaskEncoding(size, tuple(proc.image_mean), tuple(proc.image_std), augment=False)

    def encode(self, predictor: Any, items: list[Any]) -> dict[str, Any]:
        from hf_finetune.data.images import decode_image

        return dict(predictor.tokenizer([decode_image(item.value) for item in items], return_tensors="pt"))

    def example_inputs(self, predictor: Any, batch: int, length: int, seed: int) -> dict[str, Any]:
        import torch

        size = predictor.tokenizer.size
        return {"pixel_values": torch.randn((batch, 3, size["height"], size["width"]),
                                            generator=torch.Generator().manual_seed(seed))}

    def learning_rate(self, model: Any) -> tuple[float, str]:
        return MASK_CNN_LR, "a convolutional encoder (BatchNorm) under a new decoder: fine-tunes at 1e-3 with AdamW"

    def hub_base_model(self, name: str) -> str | None:
        return super().hub_base_model(name)


class PixelClasses(TaskProblem):
    kind = "masks"
    labeling = MaskLabeling()
    defaults = frozenset()
    peft_task_type = None
    card = CardWords(
        labels="It labels every pixel of an {kind} with one of {n} classes: {labels}.",
        head="a new UperNet decoder (pyramid pooling + FPN, randomly initialised) on the backbone's feature maps, "
             "{n} classes per pixel",
        per_class="Per class (IoU)",
        per_class_column="class",
        per_class_fields=("iou", "dice", "support"),
        baseline="painting every pixel the largest training class ('{name}')",
        usage='from transformers import pipeline\nsegmenter = pipeline("{task}", model="{model}")\n'
              "for segment in segmenter({example}):\n    print(segment[\"label\"], segment[\"mask\"].size)",
        metric_titles={"mean_iou": "Mean IoU", "pixel_accuracy": "Pixel accuracy", "mean_dice": "Mean Dice"},
        averages={"mean_iou": "macro", "mean_dice": "macro"},
    )

    def metrics(self, names: list[str], labels: list[str]) -> Any:
        from hf_finetune.metrics.segmentation import SegmentationMetrics

        return SegmentationMetrics(names, labels)

    def baselines(self, results: dict[str, Any], counts: Any) -> list[str]:
        from hf_finetune.metrics.segmentation import add_segmentation_baselines

        return add_segmentation_baselines(results, counts)

    def figures(self, model: Any, data: Any, folder: Any) -> list[str]:
        """A few validation images beside their true and predicted masks (EXAMPLES_DRAWN rows)."""
        from pathlib import Path

        name = "predictions_validation.png"
        try:
            draw_examples(model, data.splits["validation"], list(data.labels.names), Path(folder) / name)
        except Exception:  # a drawing problem must not cost the trained model
            logger.warning("Could not draw %s; the model card goes without it", name, exc_info=True)
            return []
        return [name]


def mask_colours(num_labels: int) -> Any:
    """A colour per class id (tab20, then repeating), and black for ignored pixels (the last row)."""
    import numpy as np
    from matplotlib import colormaps

    table = colormaps["tab20"](np.arange(num_labels) % 20)[:, :3]
    return np.vstack([table, [[0.0, 0.0, 0.0]]])


def draw_examples(model: Any, dataset: Any, names: list[str], path: Any) -> None:
    """Rows of (image, true mask, predicted mask) for the first validation images, at the model's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from matplotlib.patches import Patch

    rows = min(EXAMPLES_DRAWN, len(dataset))
    colours = mask_colours(len(names))
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows + 0.6), squeeze=False)
    model.eval()
    device = next(model.parameters()).device
    for r in range(rows):
        item = dataset[r]
        with torch.inference_mode():
            logits = model(pixel_values=item["pixel_values"][None].to(device)).logits
        pred = logits.argmax(dim=1)[0].cpu().numpy()
        true = item["labels"].numpy()
        image = item["pixel_values"].permute(1, 2, 0).numpy()
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)  # undo normalisation for display
        shown_true = np.where(true < 0, len(names), true)
        for c, (picture, title) in enumerate([(image, "image"), (colours[shown_true], "true mask"),
                                              (colours[pred], "predicted mask")]):
            axes[r][c].imshow(picture)
            axes[r][c].set_axis_off()
            if r == 0:
                axes[r][c].set_title(title)
    handles = [Patch(color=colours[i], label=n) for i, n in enumerate(names[:20])]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# What this task serves (beside full fine-tuning); everything else is refused by `check` naming the task,
# for the reasons in the module docstring.
CAPABILITIES = frozenset({"linear_probe", "layer_decay", "export", "tune", "probe_then_full", "gradual_unfreeze"})  # and full fine-tuning

TASK = Task(
    name="semantic-segmentation",
    pipeline_task="image-segmentation",
    card_name="Image Segmentation",
    inputs=MaskInputs(),
    problem=PixelClasses(),
    capabilities=CAPABILITIES,
    example_input='"path/to/image.jpg"',
    auto_model="AutoModelForSemanticSegmentation",
)
