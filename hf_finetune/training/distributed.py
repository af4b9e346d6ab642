"""FSDP's wrapping units: the model's repeated blocks (the batch split is in `training.arguments`).

Everything else about running on many devices lives in `accelerate_configs/`; the code only needs
to know how to divide a global batch and which modules are the model's repeated blocks.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from torch import nn

from hf_finetune.models.blocks import split_model

logger = logging.getLogger(__name__)


def block_classes(model: nn.Module) -> list[str]:
    """Class names of the model's repeated blocks (BertLayer, GPT2Block, timm's Block, Bottleneck...)."""
    parts = split_model(model)
    prefix = getattr(model, "base_model_prefix", "")
    names: list[str] = []
    for block in parts.blocks:
        path = block.name.split(" + ")[0]
        for candidate in (f"{prefix}.{path}", path):
            try:
                module = model.get_submodule(candidate)
            except AttributeError:
                continue
            if any(True for _ in module.parameters()) and type(module).__name__ not in names:
                names.append(type(module).__name__)
            break
    # The stem / embeddings group is one-off, not a repeated block.
    counts = {n: sum(type(m).__name__ == n for m in model.modules()) for n in names}
    return [n for n in names if counts[n] > 1]


def configure_fsdp_wrapping(accelerator: Any, model: nn.Module) -> None:
    """Under FSDP with transformer-based wrapping and no classes named, wrap the model's own blocks."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None or getattr(plugin, "transformer_cls_names_to_wrap", None):
        return
    policy = str(getattr(plugin, "auto_wrap_policy", "") or "")
    if "transformer" not in policy.lower() and "TRANSFORMER" not in os.environ.get("FSDP_AUTO_WRAP_POLICY", ""):
        return
    plugin.transformer_cls_names_to_wrap = block_classes(model)
    logger.info("FSDP wraps each %s", ", ".join(plugin.transformer_cls_names_to_wrap))
