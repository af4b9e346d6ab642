"""Defaults that depend on the machine: chosen at run time, recorded in the resolved recipe."""

from __future__ import annotations

import os
from typing import Any


def device_defaults(task: str) -> dict[str, Any]:
    """`training` defaults for this machine; the recipe's own values always win."""
    import torch

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    defaults: dict[str, Any] = {
        # Pinned host memory only speeds up copies to a GPU; without one torch warns and ignores it.
        "dataloader_pin_memory": cuda,
    }
    if cuda:
        # bf16 keeps fp32's range (no loss scaling, no overflow); TF32 speeds up fp32 matmuls on Ampere+.
        if torch.cuda.is_bf16_supported() and os.environ.get("ACCELERATE_MIXED_PRECISION") != "fp16":
            defaults["bf16"] = True
        if torch.cuda.get_device_capability()[0] >= 8:
            defaults["tf32"] = True
    if not cuda and not mps:
        # Several processes on CPUs only form a group (gloo) when accelerate is told it is on the CPU.
        defaults["use_cpu"] = True
    if task == "image-classification":
        # Decoding and augmenting images is the slow part of a vision input pipeline. With a GPU,
        # do it in worker processes, leaving one core to the training loop. Without one, the model
        # itself needs the cores: a quarter of them decode (none on a small machine, where a worker
        # only slows training; benchmarks/vision_pipeline.py measures it). Workers are not kept
        # alive across loaders: forking them is cheap, and kept-alive workers of the Trainer's
        # loaders were seen to stall for seconds each when released.
        cores = os.cpu_count() or 2
        defaults["dataloader_num_workers"] = min(8, cores - 1) if cuda else cores // 4
    return defaults
