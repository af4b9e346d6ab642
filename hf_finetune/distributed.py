"""What changes with the number of processes: the batch split, and FSDP's wrapping units.

Everything else about running on many devices lives in `accelerate_configs/`; the code only needs
to know how to divide a global batch and which modules are the model's repeated blocks.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from torch import nn

from hf_finetune.blocks import split_model
from hf_finetune.errors import Problem, RecipeError
from hf_finetune.recipe import Recipe

logger = logging.getLogger(__name__)


def launched_processes() -> int:
    """The number of processes the launcher started (accelerate/torchrun/deepspeed set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def resolve_batch(recipe: Recipe, processes: int) -> dict[str, int]:
    """Per-device batch and gradient accumulation for `processes`, written into the recipe.

    With `batch.global_size`, each process takes global_size / processes samples per optimizer
    step, in as few accumulation steps as keep the per-device batch at most `batch.max_per_device`
    (default: training.per_device_train_batch_size). Without it, the per-device values are used as
    given and the global batch grows with the number of processes.

    Raises:
        RecipeError: when the global batch does not divide over the processes.
    """
    t = recipe.training
    size = recipe.batch.global_size
    if size is None:
        per_device, steps = t.get("per_device_train_batch_size", 8), t.get("gradient_accumulation_steps", 1)
    else:
        if size % processes:
            raise RecipeError([Problem("batch.global_size",
                                       f"{size} samples do not divide evenly over {processes} processes")])
        per_process = size // processes
        cap = recipe.batch.max_per_device or t.get("per_device_train_batch_size", 8)
        steps = -(-per_process // cap)  # ceil
        while per_process % steps:
            steps += 1
        per_device = per_process // steps
        t["per_device_train_batch_size"], t["gradient_accumulation_steps"] = per_device, steps
    split = {"global": per_device * steps * processes, "processes": processes, "per_device": per_device,
             "accumulation_steps": steps}
    logger.info("Batch: %d samples per optimizer step = %d processes x %d per device x %d accumulation steps%s",
                split["global"], processes, per_device, steps,
                " (from batch.global_size)" if size is not None else " (per-device values as given)")
    return split


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
