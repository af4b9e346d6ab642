"""Image inputs (timm backbones): what every image task shares.

Images are decoded to RGB and transformed on the fly by the backbone's own pretrained data config
(input size, crop, mean, std): never a hand-typed size or statistic.
"""

from __future__ import annotations

import logging
from typing import Any

from hf_finetune import hub
from hf_finetune.data.encodings import ImageEncoding, listing
from hf_finetune.data.images import decode_image, prepare_image_column, scan_images
from hf_finetune.errors import DataError
from hf_finetune.tasks.base import Inputs, Preprocessing

logger = logging.getLogger(__name__)

# AdamW learning rates per backbone family, measured on digits with EfficientNet-Lite (benchmarks/quality.py)
CNN_LR = 1e-3  # BatchNorm CNNs barely move at the Trainer's 5e-5
VISION_TRANSFORMER_LR = 1e-4
SAMPLE_IMAGES = 8  # images decoded per split by the pre-flight check


class ImageInputs(Inputs):
    kind = "image"
    input_keys = ("image",)
    sections = frozenset({"augmentation"})
    libraries = ("timm",)
    foreign_model_keys = frozenset({"attn_implementation", "attention_dropout", "hidden_dropout"})
    defaults = frozenset({"hflip"})
    folder_key = "image_folder"
    tune_learning_rates = (1e-5, 3e-3)  # spans ViTs' 1e-4 and CNNs' 1e-3
    # timm CNNs' depthwise convolutions gain nothing in bf16 on CPUs (measured 0.87 s vs 1.00 s a step)
    bf16_on_amx = False
    decode_workers = True  # decoding and augmenting images is the slow part of the input pipeline
    teacher_cached = False  # augmented images differ every epoch: the teacher sees each batch as the student

    def describe_model(self, spec: Any) -> str:
        from hf_finetune.models.backbones import load_vision_config, resolve_vision_name

        where = "local folder" if hub.is_local_path(spec.name) else "Hub"
        _, arch = resolve_vision_name(spec)
        config = load_vision_config(spec)
        origin = f"timm architecture {arch}" if arch else where
        return f"{spec.name} ({origin}, timm {config.architecture})"

    def load_config(self, spec: Any) -> Any:
        from hf_finetune.models.backbones import load_vision_config

        return load_vision_config(spec)

    def check_columns(self, splits: dict[str, Any], recipe: Any, names: dict[str, str]) -> None:
        """The first images of every split decode; with bad_images: skip, only a sample where none does fails."""
        column, skip_bad = recipe.data.columns.image, recipe.data.bad_images == "skip"
        for role, ds in splits.items():
            ds = prepare_image_column(ds, column, names[role])
            bad = []
            sampled = min(SAMPLE_IMAGES, len(ds))
            for row in range(sampled):
                try:
                    decode_image(ds[row][column])
                except DataError as exc:
                    bad.append(f"row {row}: {exc}")
            if bad and (not skip_bad or len(bad) == sampled):
                raise DataError(
                    f"data.columns.image: images of split '{names[role]}' do not decode (data.bad_images: skip "
                    "trains without unreadable images):\n    " + "\n    ".join(bad)
                )

    def preprocessing(self, recipe: Any, *, augment: bool = True, pad_to_multiple_of: int | None = None
                      ) -> Preprocessing:
        """The backbone's data config; training images augmented unless `augment` is False."""
        from hf_finetune.models.backbones import load_vision_config, vision_data_config

        data_config = vision_data_config(load_vision_config(recipe.model))
        encoding = ImageEncoding(data_config, recipe.augmentation.timm_kwargs() if augment else None)
        return Preprocessing(encoding, None, {"image": data_config}, {}, verb="reading images")

    def build_backbone(self, spec: Any, labels: Any, tokenizer: Any = None) -> Any:
        from hf_finetune.models.backbones import build_vision_model

        return build_vision_model(spec, labels)

    def finish_model(self, recipe: Any, model: Any, prep: Preprocessing, data: Any) -> dict[str, Any]:
        """Channels-last where it is a measured win (convolutions on GPUs; not assumed on CPUs)."""
        import torch

        from hf_finetune.data.vision import ImageCollator
        from hf_finetune.models.backbones import is_convolutional

        channels_last = recipe.model.channels_last
        if channels_last is None:
            channels_last = torch.cuda.is_available() and is_convolutional(model)
        if channels_last:
            model.to(memory_format=torch.channels_last)
            data.collator = ImageCollator(channels_last=True)
        return {"channels_last": channels_last}

    def recognises(self, config: dict[str, Any]) -> bool:
        return "architecture" in config  # timm's config.json names its architecture

    def preprocessor(self, folder: Any, config: Any, recipe: dict[str, Any], max_length: int | None = None,
                     **kwargs: Any) -> dict[str, Any]:
        """The evaluation transform of the saved pretrained config, as pipeline() preprocesses."""
        from hf_finetune.data.vision import build_eval_transform
        from hf_finetune.models.backbones import vision_data_config

        return {"transform": build_eval_transform(vision_data_config(config))}

    def finished_encoding(self, predictor: Any) -> ImageEncoding:
        """A finished model's preprocessing: the eval transform of its saved pretrained config."""
        from hf_finetune.models.backbones import vision_data_config

        return ImageEncoding(vision_data_config(predictor.model.config))

    def encode(self, predictor: Any, items: list[Any]) -> dict[str, Any]:
        import torch

        return {"pixel_values": torch.stack([predictor.transform(decode_image(item.value)) for item in items])}

    def decode(self, items: list[Any]) -> list[Any]:
        """Images decoded once, to be transformed by each member's own preprocessing."""
        import dataclasses

        return [dataclasses.replace(item, value=decode_image(item.value)) for item in items]

    def input_names(self, predictor: Any) -> list[str]:
        return ["pixel_values"]

    def example_inputs(self, predictor: Any, batch: int, length: int, seed: int) -> dict[str, Any]:
        """Random pixels at the model's input size (`length` means nothing to images)."""
        import torch

        size = tuple(predictor.model.config.pretrained_cfg.get("input_size") or (3, 224, 224))
        return {"pixel_values": torch.randn((batch, *size), generator=torch.Generator().manual_seed(seed))}

    def dynamic_shapes(self, predictor: Any, names: list[str]) -> Any:
        import torch

        return (({0: torch.export.Dim("batch", min=1)},),)  # forward(*tensors): one varargs entry

    def learning_rate(self, model: Any) -> tuple[float, str]:
        from hf_finetune.models.backbones import is_convolutional

        if is_convolutional(model):
            return CNN_LR, "a convolutional network (BatchNorm): fine-tunes at 1e-3 with AdamW"
        return VISION_TRANSFORMER_LR, "a vision transformer"

    def usable_rows(self, ds: Any, recipe: Any, key: str, where: str) -> Any:
        """The rows of an unlabelled pool with a readable image (data.bad_images decides about the rest)."""
        data = recipe.data
        ds = prepare_image_column(ds, data.columns.image, f"data.unlabeled ({where})")
        if not data.verify_images:
            return ds
        kept, bad = scan_images(ds, data.columns.image, None, f"data.unlabeled ({where})")
        if not bad:
            return ds
        if data.bad_images == "error" or len(kept) == 0:
            raise DataError(f"{key}: {len(bad)} unreadable images in the unlabelled pool"
                            + (" (set data.bad_images: skip to leave them out)" if data.bad_images == "error" else
                               ", and no readable one is left") + f":\n    {listing(bad)}")
        logger.warning("Unlabelled pool: leaving out %d unreadable images:\n    %s", len(bad), listing(bad))
        return kept

    def unlabelled_dataset(self, recipe: Any, rows: Any, prep_record: dict[str, Any], tokenizer: Any) -> Any:
        """Unlabelled rows with the evaluation transform."""
        from hf_finetune.data.vision import ImageTransform, build_eval_transform

        column = recipe.data.columns.image
        ds = rows.select_columns([column])
        ds.set_transform(ImageTransform(column, build_eval_transform(prep_record["image"])))
        return ds

    def hub_base_model(self, name: str) -> str | None:
        """A timm architecture name stands for its pretrained weights' Hub repository."""
        if "/" in name:
            return name
        import timm.models

        cfg = timm.models.get_pretrained_cfg(name)
        return getattr(cfg, "hf_hub_id", None) if cfg is not None else None

    def feature_pooling(self, spec: Any) -> str | None:
        return None  # the input of the head (timm's pre-logits)

    def normalisation(self, model: Any) -> tuple[Any, Any, tuple[int, int]]:
        """(mean, std, input height and width) of the model's own data config, as tensors to (un)normalise."""
        import torch

        from hf_finetune.models.backbones import vision_data_config

        cfg = vision_data_config(model.config)
        mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, -1, 1, 1)
        return mean, std, tuple(int(v) for v in cfg["input_size"][-2:])
