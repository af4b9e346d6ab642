"""Several processes (`accelerate launch`): rank 0 owns the study, every rank runs the same trial.

Rank 0 asks Optuna for a trial and broadcasts its values; at each evaluation rank 0 reports to
Optuna, decides whether to prune, and broadcasts the decision, so all ranks stop at the same step.
transformers' own `hyperparameter_search` prunes on rank 0 alone, which leaves the other ranks
waiting on a collective (a hang); here no decision is ever taken on one rank only.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from hf_finetune.errors import UserError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_main() -> bool:
    return rank() == 0


def start_process_group(ddp_timeout: int = 1800) -> None:
    """Joins the process group before the first trial (the Trainer would only do it inside a trial).

    Raises:
        UserError: a launch this search cannot run safely (DeepSpeed, FSDP: not verified here).
    """
    if world_size() == 1:
        return
    for variable, name in (("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"), ("ACCELERATE_USE_FSDP", "FSDP")):
        if os.environ.get(variable, "false").lower() == "true":
            raise UserError(
                f"tune: {name} is not supported under several processes (a new engine per trial has not been "
                "verified to stop together on every rank); run the search with DDP "
                "(accelerate_configs/multi_gpu.yaml or cpu_ddp.yaml) or one process, then train the best "
                f"recipe with {name}"
            )
    import torch
    from accelerate import PartialState

    # The same state TrainingArguments would create (gloo on CPUs, NCCL on GPUs), created once here.
    PartialState(cpu=not torch.cuda.is_available(), timeout=datetime.timedelta(seconds=ddp_timeout))


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (the others' argument is ignored); itself with one process."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
