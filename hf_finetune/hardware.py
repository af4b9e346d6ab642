"""Defaults that depend on the machine: chosen at run time, recorded in the resolved recipe."""

from __future__ import annotations

from typing import Any


def device_defaults(task: str) -> dict[str, Any]:
    """`training` defaults for this machine; the recipe's own values always win."""
    import torch

    cuda = torch.cuda.is_available()
    # Pinned host memory only speeds up copies to a GPU; without one torch warns and ignores it.
    return {"dataloader_pin_memory": cuda}
