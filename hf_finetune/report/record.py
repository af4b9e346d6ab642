"""The run record: what run.json and metrics.json keep about a run (manifest, hyperparameters, versions)."""

from __future__ import annotations

import datetime as dt
import importlib
import time
from typing import Any

from hf_finetune.tasks import task_of
from hf_finetune.version import __version__


def hub_ids(recipe: Any) -> dict[str, str | None]:
    """The Hub ids of the base model and dataset, for the card's metadata (None for local ones).

    Decided when the run finishes and kept in run.json, so that rendering the card again later does
    not depend on which local folders still exist.
    """
    from hf_finetune import hub

    base = recipe.card.base_model
    name = recipe.model.name.removeprefix("hf-hub:")
    if base is None and recipe.model.pretrained and not hub.is_local_path(name) and not hub.looks_like_path(name):
        base = task_of(recipe).inputs.hub_base_model(name)  # a timm architecture: its weights' repository
    dataset = recipe.card.dataset
    if dataset is None and recipe.data.dataset is not None and not hub.is_local_path(recipe.data.dataset):
        dataset = recipe.data.dataset
    return {"base_model": base, "dataset": dataset}


def build_manifest(recipe: Any, args: Any, data: Any, preprocessing: dict[str, Any],
                   started: float) -> dict[str, Any]:
    """The run's record (run.json, less the file list that publishing adds)."""
    return {
        "hf_finetune_version": __version__,
        "task": recipe.task,
        "base_model": recipe.model.name,
        "hub_ids": hub_ids(recipe),
        "labels": list(data.labels.names),
        "splits": split_records(data),
        "preprocessing": preprocessing,
        "preprocessing_cache": data.cache,
        "skipped_images": data.skipped_images,
        **({"labeling": data.label_notes} if getattr(data, "label_notes", None) else {}),  # tags: scheme, malformed
        "training": effective_hyperparameters(args),
        "versions": framework_versions(recipe),
        "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - started, 1),
    }


def split_records(data: Any) -> dict[str, dict[str, Any]]:
    """run.json's `splits`: rows and source per role; a carved validation's record too, so that the commands
    that read the run's data again rebuild the same rows (data/carved.py)."""
    out = {role: {"rows": n, "source": data.sources[role]} for role, n in data.sizes.items()}
    if getattr(data, "carved", None) and "validation" in out:
        out["validation"]["carved"] = data.carved
    return out


def effective_hyperparameters(args: Any) -> dict[str, Any]:
    """The settings that shaped training, as the Trainer used them (defaults included), for the card."""
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    per_device = args.per_device_train_batch_size
    return {
        "learning_rate": args.learning_rate,
        "num_train_epochs": args.num_train_epochs,
        "max_steps": args.max_steps if args.max_steps > 0 else None,
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "processes": args.world_size,
        "total_train_batch_size": per_device * args.gradient_accumulation_steps * args.world_size,
        "optim": str(getattr(args.optim, "value", args.optim)),
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm,
        "label_smoothing_factor": args.label_smoothing_factor,
        "precision": precision,
        "seed": args.seed,
        "metric_for_best_model": args.metric_for_best_model,
    }


def framework_versions(recipe: Any) -> dict[str, str]:
    import datasets
    import torch
    import transformers

    versions = {"hf-finetune": __version__, "transformers": transformers.__version__,
                "torch": torch.__version__, "datasets": datasets.__version__}
    for library in task_of(recipe).inputs.libraries:
        versions[library] = importlib.import_module(library).__version__
    return versions


def train_record(session: Any, train_output: Any) -> dict[str, Any]:
    """metrics.json's `train` entry: loss, time, speed, steps, the best checkpoint, the batch, the strategy."""
    trainer, plan = session.setup.trainer, session.setup.plan
    state = trainer.state
    return {
        "loss": train_output.training_loss,
        "setup_s": round(session.setup_s, 2),
        "runtime_s": train_output.metrics.get("train_runtime"),
        "samples_per_second": train_output.metrics.get("train_samples_per_second"),
        "steps": state.global_step,
        "epochs": state.epoch,
        "best_checkpoint": state.best_model_checkpoint,
        "best_metric": state.best_metric,
        "resumed_from": session.checkpoint,
        "batch": session.batch,
        "stopped_early": state.global_step < state.max_steps,
        "strategy": session.recipe.finetune.strategy,
        "phases": plan.phases if plan else [{"phase": 0, "training": "head only, on cached features"}],
        "param_groups": plan.group_summary() if plan else [],
        "class_weights": session.setup.class_weights,
        **({"lora": session.setup.lora} if session.setup.lora is not None else {}),
    }
