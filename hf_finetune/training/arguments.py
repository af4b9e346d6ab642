"""`recipe.training` -> `TrainingArguments`: the one home of every training default and the batch split.

Three layers, the later winning: the installed `TrainingArguments` defaults; our house defaults
(applied at validation, so `check` shows them: recipe/sections/training.py); machine defaults
(decided at run time, for keys the user did not write). Then the batch split over processes, then the
arguments themselves. Nothing here writes into the Recipe: `resolve_training` returns what it
resolved and the run records it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_finetune.errors import Problem, RecipeError, did_you_mean
from hf_finetune.recipe.sections.training import installed_default

if TYPE_CHECKING:
    from hf_finetune.recipe import Recipe

logger = logging.getLogger(__name__)


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX), where bf16 is much faster than fp32."""
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", None)
    try:
        return bool(capabilities and capabilities().get("amx_bf16"))
    except Exception:  # an unknown CPU or torch build: keep fp32
        return False


def device_defaults(task: str) -> dict[str, Any]:
    """`training` defaults for this machine; the recipe's own values always win."""
    import torch

    from hf_finetune.tasks import get_task

    inputs = get_task(task).inputs
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
        if inputs.bf16_on_amx and cpu_has_bf16_matmul():
            # bf16 autocast (fp32 master weights) runs transformer matmuls on the CPU's AMX units:
            # a MiniLM training step 1.6x faster, evaluation 2.8x. Not for timm CNNs: their
            # depthwise convolutions gain nothing in bf16 on CPUs (measured 0.87 s vs 1.00 s a step).
            defaults["bf16"] = True
    if inputs.decode_workers:
        # Decoding and augmenting images is the slow part of a vision input pipeline. With a GPU,
        # do it in worker processes, leaving one core to the training loop. Without one, the model
        # itself needs the cores: a quarter of them decode (none on a small machine, where a worker
        # only slows training; benchmarks/vision_pipeline.py measures it). Workers are not kept
        # alive across loaders: forking them is cheap, and kept-alive workers of the Trainer's
        # loaders were seen to stall for seconds each when released.
        cores = os.cpu_count() or 2
        defaults["dataloader_num_workers"] = min(8, cores - 1) if cuda else cores // 4
    return defaults


def machine_defaults(recipe: Recipe) -> dict[str, Any]:
    """The machine defaults for the `training` keys the user did not write (fp16 counts for bf16)."""
    written = recipe.user_training_keys
    return {key: value for key, value in device_defaults(recipe.task).items()
            if key not in written and not (key == "bf16" and "fp16" in written)}


def launched_processes() -> int:
    """The number of processes the launcher started (accelerate/torchrun/deepspeed set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


@dataclass(frozen=True)
class BatchSplit:
    """How many samples make one optimizer step, and how they are divided."""

    global_size: int
    processes: int
    per_device: int
    accumulation_steps: int
    from_global_size: bool  # derived from batch.global_size, or the per-device values as given

    def record(self) -> dict[str, int]:
        """The split as metrics.json records it."""
        return {"global": self.global_size, "processes": self.processes, "per_device": self.per_device,
                "accumulation_steps": self.accumulation_steps}


def split_batch(recipe: Recipe, training: dict[str, Any], processes: int) -> BatchSplit:
    """Per-device batch and gradient accumulation for `processes`.

    With `batch.global_size`, each process takes global_size / processes samples per optimizer
    step, in as few accumulation steps as keep the per-device batch at most `batch.max_per_device`
    (default: training.per_device_train_batch_size). Without it, the per-device values are used as
    given and the global batch grows with the number of processes.

    Raises:
        RecipeError: when the global batch does not divide over the processes.
    """
    size = recipe.batch.global_size
    per_device = training.get("per_device_train_batch_size", installed_default("per_device_train_batch_size"))
    if size is None:
        steps = training.get("gradient_accumulation_steps", installed_default("gradient_accumulation_steps"))
        return BatchSplit(per_device * steps * processes, processes, per_device, steps, from_global_size=False)
    if size % processes:
        raise RecipeError([Problem("batch.global_size",
                                   f"{size} samples do not divide evenly over {processes} processes")])
    per_process = size // processes
    cap = recipe.batch.max_per_device or per_device
    steps = -(-per_process // cap)  # ceil
    while per_process % steps:
        steps += 1
    return BatchSplit(size, processes, per_process // steps, steps, from_global_size=True)


@dataclass(frozen=True)
class ResolvedTraining:
    """The `training` section as this run uses it, and what was decided on the way."""

    training: dict[str, Any]  # recipe.training + machine defaults + the batch split
    machine: dict[str, Any]  # the machine defaults that applied
    batch: BatchSplit


def resolve_training(recipe: Recipe, processes: int | None = None, log: bool = True) -> ResolvedTraining:
    """The recipe's `training` section completed for this machine and number of processes."""
    processes = launched_processes() if processes is None else processes
    machine = machine_defaults(recipe)
    training = {**recipe.training, **machine}
    batch = split_batch(recipe, training, processes)
    if batch.from_global_size:
        training["per_device_train_batch_size"] = batch.per_device
        training["gradient_accumulation_steps"] = batch.accumulation_steps
    if log:
        logger.info("Batch: %d samples per optimizer step = %d processes x %d per device x %d accumulation steps%s",
                    batch.global_size, processes, batch.per_device, batch.accumulation_steps,
                    " (from batch.global_size)" if batch.from_global_size else " (per-device values as given)")
    return ResolvedTraining(training, machine, batch)


def build_training_arguments(training: dict[str, Any], checkpoints: str | os.PathLike,
                             source: str | None = None) -> Any:
    """`TrainingArguments` from a resolved `training` section (plus the keys the pipeline owns).

    Raises:
        RecipeError: TrainingArguments refused a value (its message, under the `training` key).
    """
    from transformers import TrainingArguments

    kwargs = dict(training)
    kwargs.pop("resume_from_checkpoint", None)  # interpreted by the run: 'auto' or a folder
    kwargs.update(
        output_dir=str(Path(checkpoints)),
        remove_unused_columns=False,  # the data stage keeps exactly the model's inputs and labels
        label_names=["labels"],
    )
    if training.get("deepspeed") is not None and importlib.util.find_spec("deepspeed") is None:
        raise RecipeError([Problem("training.deepspeed", "needs the deepspeed package: pip install deepspeed")],
                          source)
    try:
        args = TrainingArguments(**kwargs)
    except (ValueError, TypeError, ImportError) as exc:
        raise RecipeError([Problem("training", str(exc).strip())], source) from None
    problems = runtime_problems(args)
    if problems:
        raise RecipeError(problems, source)
    return args


def runtime_problems(args: Any) -> list[Problem]:
    """What TrainingArguments accept but training would refuse later, after the data and model are loaded:
    an optimizer or kernel whose package is missing, scheduler arguments the scheduler does not take."""
    import inspect

    from transformers import Trainer
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION
    from transformers.utils import is_liger_kernel_available

    from hf_finetune.training.tracking import tracker_problems

    problems: list[Problem] = []
    try:
        Trainer.get_optimizer_cls_and_kwargs(args)
    except (ImportError, ValueError) as exc:
        problems.append(Problem("training.optim", f"{args.optim.value if hasattr(args.optim, 'value') else args.optim}"
                                                  f" cannot be used here: {str(exc).strip().splitlines()[0]}"))
    problems += tracker_problems(args.report_to)  # before the data and model load, naming what to install
    if args.use_liger_kernel and not is_liger_kernel_available():
        problems.append(Problem("training.use_liger_kernel", "needs the liger-kernel package: pip install liger-kernel"))
    scheduler = TYPE_TO_SCHEDULER_FUNCTION.get(args.lr_scheduler_type)
    kwargs = args.lr_scheduler_kwargs or {}
    if scheduler is not None and isinstance(kwargs, dict) and kwargs:
        params = inspect.signature(scheduler).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        accepted = [n for n in params if n not in ("optimizer", "num_warmup_steps", "num_training_steps")]
        for key in kwargs:
            if not takes_any and key not in accepted:
                problems.append(Problem(f"training.lr_scheduler_kwargs.{key}",
                                        f"not an argument of the {args.lr_scheduler_type.value} scheduler "
                                        f"(it takes: {', '.join(accepted) or 'none'})" + did_you_mean(key, accepted)))
    return problems


def check_training_arguments(recipe: Recipe) -> None:
    """Builds the run's TrainingArguments once, so `check` reports what they refuse (nothing is written).

    Raises:
        RecipeError: TrainingArguments refused a value.
    """
    build_training_arguments(resolve_training(recipe, log=False).training, Path(recipe.output.dir) / "checkpoints",
                             recipe.source)
