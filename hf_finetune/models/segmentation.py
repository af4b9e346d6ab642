"""Segmentation models: a timm backbone's feature pyramid under transformers' UperNet decoder.

The model is `UperNetForSemanticSegmentation` whose backbone is transformers' `TimmBackbone` (timm's
`features_only` model), so the saved folder loads in `AutoModelForSemanticSegmentation` and
`pipeline("image-segmentation")` without remote code. `TimmBackbone` would fetch pretrained weights
from the Hub itself (`timm.create_model(pretrained=True)`); it is built empty instead and the
backbone's weights come through the same loader as image classification's (models/backbones.py: a
local timm folder, or the Hub for online users).

The decoder is UperNet's (pyramid pooling + FPN) at DECODER_CHANNELS channels rather than its 512:
its 3x3 fusion convolution over four concatenated levels dominates the cost (at 128 channels a
training step of tiny test_resnet took 1.6 s for 16 images of 64 px on 2 CPU cores, the backbone a
small part of it), and the feature maps of small CNNs (EfficientNet-Lite0: 24-320 channels) need no
wider decoder. No auxiliary head: our Trainer computes one loss over the final logits.
"""

from __future__ import annotations

import logging
from typing import Any

from hf_finetune.data.labels import LabelSpace
from hf_finetune.errors import ModelError

logger = logging.getLogger(__name__)

DECODER_CHANNELS = 64
LEVELS = 4  # feature maps the decoder reads: the last four (strides 4..32 on most CNNs)


def feature_levels(arch: str) -> list[int]:
    """The indices of the backbone's last LEVELS feature maps (those at stride 4 or coarser)."""
    import timm

    probe = timm.create_model(arch, pretrained=False, features_only=True)
    reductions = probe.feature_info.reduction()
    usable = [i for i, r in enumerate(reductions) if r >= 4] or list(range(len(reductions)))
    if len(usable) < 2:
        raise ModelError(f"model.name: {arch} gives {len(reductions)} feature map(s); a segmentation decoder "
                         "needs a pyramid of at least two")
    return usable[-LEVELS:]


def build_segmentation_model(spec: Any, labels: LabelSpace, ignore_index: int = 255) -> Any:
    """UperNet on the recipe's timm backbone, the backbone's pretrained weights loaded (model.pretrained)."""
    from transformers import TimmBackboneConfig, UperNetConfig, UperNetForSemanticSegmentation

    from hf_finetune.models.backbones import build_vision_model, load_vision_config

    vision_config = load_vision_config(spec)
    arch = vision_config.architecture
    try:
        levels = feature_levels(arch)
    except (RuntimeError, AttributeError) as exc:
        raise ModelError(f"model.name: timm cannot give feature maps (features_only) for {arch}: {exc}") from None
    backbone = TimmBackboneConfig(backbone=arch, out_indices=levels)
    config = UperNetConfig(backbone_config=backbone, hidden_size=DECODER_CHANNELS, use_auxiliary_head=False,
                           num_labels=labels.num_labels, id2label=labels.id2label, label2id=labels.label2id,
                           loss_ignore_index=ignore_index)
    model = UperNetForSemanticSegmentation(config)
    if spec.pretrained:
        classifier = build_vision_model(spec, labels)  # the weights as image classification loads them
        state = classifier.timm_model.state_dict()
        result = model.backbone._backbone.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise ModelError(f"model.name: the weights of {spec.name} do not fit timm's {arch} feature extractor: "
                             f"{len(result.missing_keys)} tensors missing, first {result.missing_keys[0]}")
        del classifier
    else:
        logger.warning("model.pretrained is false: %s starts from random weights", spec.name)
    return model


def build_image_processor(size: tuple[int, int], data_config: dict[str, Any]) -> Any:
    """What pipeline("image-segmentation") preprocesses with: resize to the trained size, the backbone's
    mean and std; labels kept as they are (no reduce_labels)."""
    from transformers import SegformerImageProcessor

    return SegformerImageProcessor(do_resize=True, size={"height": size[0], "width": size[1]},
                                   image_mean=list(data_config["mean"]), image_std=list(data_config["std"]),
                                   do_reduce_labels=False)
