"""One recipe, end to end: `run(recipe)` reads top to bottom."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from hf_finetune import __version__
from hf_finetune.callbacks import NonFiniteLossCallback, NonFiniteLossError, PreemptionCallback
from hf_finetune.checkpoints import checkpoint_problem, latest_complete_checkpoint
from hf_finetune.data import PreparedData, build_datasets
from hf_finetune.data.text import default_max_length
from hf_finetune.data.vision import ImageCollator
from hf_finetune.distributed import launched_processes, resolve_batch
from hf_finetune.errors import Problem, RecipeError, TrainingAborted
from hf_finetune.hardware import device_defaults
from hf_finetune.logs import configure_process_logging
from hf_finetune.metrics import ClassificationMetrics
from hf_finetune.models import (
    build_text_model,
    build_tokenizer,
    build_vision_model,
    is_convolutional,
    load_text_config,
    load_vision_config,
    vision_data_config,
)
from hf_finetune.outputs import (
    checkpoints_dir,
    clear_previous_run,
    guard_output_dir,
    publish,
    read_run,
    staging_dir,
    write_json,
    write_yaml,
)
from hf_finetune.preflight import preflight
from hf_finetune.push import push_output
from hf_finetune.recipe import Recipe
from hf_finetune.report import hub_ids, summary_line, write_report
from hf_finetune.trainer_setup import build_trainer

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, Any]  # validation / test reports and training figures


def apply_device_defaults(recipe: Recipe) -> None:
    """Adapts the defaults the user did not set to this machine; recorded in the resolved recipe."""
    explicit = recipe._explicit_training
    for key, value in device_defaults(recipe.task).items():
        if key in explicit or (key == "bf16" and "fp16" in explicit):
            continue
        recipe.training[key] = value


def build_training_arguments(recipe: Recipe) -> Any:
    """`TrainingArguments` from the recipe's `training` section (plus the keys the pipeline owns)."""
    from transformers import TrainingArguments

    kwargs = dict(recipe.training)
    kwargs.pop("resume_from_checkpoint", None)  # interpreted by run(): 'auto' or a folder
    kwargs.update(
        output_dir=str(checkpoints_dir(recipe.output.dir)),
        remove_unused_columns=False,  # the data stage keeps exactly the model's inputs and labels
        label_names=["labels"],
    )
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, TypeError, ImportError) as exc:
        raise RecipeError([Problem("training", str(exc).strip())], source=None) from None


def seed_everything(args: Any) -> None:
    from transformers import enable_full_determinism, set_seed

    if args.full_determinism:
        enable_full_determinism(args.seed)
    else:
        set_seed(args.seed)


def resolve_max_length(recipe: Recipe, tokenizer: Any, model_config: Any) -> int:
    """The recipe's max_length, or the backbone's limit when unset; more than the limit is an error."""
    limit = default_max_length(tokenizer, model_config)
    asked = recipe.preprocessing.max_length
    if asked is not None and asked > limit:
        raise RecipeError(
            [Problem("preprocessing.max_length", f"{asked} exceeds the backbone's limit of {limit} tokens")]
        )
    return asked or limit


def prepare_data_and_model(recipe: Recipe, args: Any) -> tuple[PreparedData, Any, Any, dict[str, Any]]:
    """Builds the preprocessed data, then the backbone with a head sized to the data's label space.

    Returns:
        (data, model, tokenizer or None, resolved preprocessing settings for the record).
    """
    def first(desc: str):
        return lambda: args.main_process_first(desc=desc)

    pad_multiple = 8 if (args.bf16 or args.fp16) else None  # tensor-core friendly lengths
    if recipe.is_text:
        tokenizer = build_tokenizer(recipe.model)
        max_length = resolve_max_length(recipe, tokenizer, load_text_config(recipe.model))
        recipe.preprocessing.max_length = max_length
        data = build_datasets(recipe, tokenizer=tokenizer, max_length=max_length,
                              pad_to_multiple_of=pad_multiple, main_process_first=first("tokenizing"))
        model = build_text_model(recipe.model, data.labels, tokenizer)
        attention = getattr(model.config, "_attn_implementation", None)
        if attention in ("sdpa", "eager", "flash_attention_2"):
            recipe.model.attn_implementation = attention  # recorded in the resolved recipe
        return data, model, tokenizer, {"max_length": max_length}
    data_config = vision_data_config(load_vision_config(recipe.model))
    # Cached features are computed once, so every split gets the evaluation preprocessing.
    augment = None if recipe.finetune.cache_features else recipe.augmentation.timm_kwargs()
    data = build_datasets(recipe, data_config=data_config, augment=augment,
                          main_process_first=first("reading images"))
    model = build_vision_model(recipe.model, data.labels)
    channels_last = recipe.model.channels_last
    if channels_last is None:  # a measured win for convolutions on GPUs; not assumed on CPUs
        channels_last = torch.cuda.is_available() and is_convolutional(model)
    recipe.model.channels_last = channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        data.collator = ImageCollator(channels_last=True)
    return data, model, None, {"image": data_config}


def evaluate_split(trainer: Any, dataset: Any, metrics: ClassificationMetrics, prefix: str) -> dict[str, Any]:
    """Scores one split with the recipe's metrics, per-class figures and the confusion matrix."""
    output = trainer.predict(dataset, metric_key_prefix=prefix)
    report = metrics.report(output.predictions, output.label_ids)
    report["loss"] = output.metrics.get(f"{prefix}_loss")
    return report


def find_resume_checkpoint(recipe: Recipe, args: Any) -> str | None:
    """The checkpoint to resume from: the one the recipe names, else the newest complete one."""
    named = recipe.training.get("resume_from_checkpoint")
    if named not in (None, "auto"):
        problem = checkpoint_problem(named)
        if problem:
            raise RecipeError([Problem("training.resume_from_checkpoint", f"{named} is incomplete: {problem}")])
        return str(named)
    folder = checkpoints_dir(recipe.output.dir)
    with args.main_process_first(desc="finding the checkpoint to resume from"):
        # The main process removes incomplete checkpoints; the others then see only complete ones.
        checkpoint = latest_complete_checkpoint(folder, remove_incomplete=args.process_index == 0)
    if checkpoint is None:
        logger.info("Nothing to resume in %s: starting from the beginning", folder)
        return None
    logger.info("Resuming from %s", checkpoint)
    return str(checkpoint)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def record_or_compare_recipe(recipe: Recipe, resuming: bool) -> None:
    """Keeps the recipe a run started with next to its checkpoints; a resume says what changed since."""
    path = checkpoints_dir(recipe.output.dir) / "recipe.yaml"
    current = recipe.to_dict()
    if resuming and path.is_file():
        before, now = _flatten(yaml.safe_load(path.read_text())), _flatten(current)
        changed = sorted(k for k in before.keys() | now.keys()
                         if before.get(k) != now.get(k) and not k.endswith("resume_from_checkpoint"))
        if changed:
            logger.warning("Resuming with a recipe that differs from the one the run started with: %s",
                           ", ".join(f"{k} ({before.get(k)!r} -> {now.get(k)!r})" for k in changed))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_yaml(path, current)


def _resume_command(recipe: Recipe) -> str:
    return f"hf-finetune train {recipe.source or 'RECIPE'} --resume (with the same overrides, if any)"


def train_with_safeguards(trainer: Any, recipe: Recipe, checkpoint: str | None) -> Any:
    """`trainer.train()` that checkpoints and stops on SIGTERM/SIGINT and stops on a non-finite loss."""
    preemption, nonfinite = PreemptionCallback(), NonFiniteLossCallback()
    for callback in (preemption, nonfinite):
        callback.trainer = trainer
        trainer.add_callback(callback)
    preemption.install()
    try:
        output = trainer.train(resume_from_checkpoint=checkpoint)
    except NonFiniteLossError as exc:
        last = latest_complete_checkpoint(checkpoints_dir(recipe.output.dir))
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been saved yet"
        precision = "fp16" if trainer.args.fp16 else "bf16" if trainer.args.bf16 else "fp32"
        raise TrainingAborted(
            f"training stopped: the loss became NaN or infinite at step {exc.step} (epoch {exc.epoch:.2f}), "
            f"before that step changed any weight; {kept}. Try a lower training.learning_rate (now "
            f"{trainer.args.learning_rate:g}), gradient clipping (training.max_grad_norm, now "
            f"{trainer.args.max_grad_norm:g}) or a wider precision (now {precision}; bf16 is safer than fp16), "
            f"then resume: {_resume_command(recipe)}."
        ) from None
    finally:
        preemption.uninstall()
    if preemption.received is not None:
        name = signal.Signals(preemption.received).name
        checkpoint_dir = checkpoints_dir(recipe.output.dir) / f"checkpoint-{preemption.stopped_at_step}"
        raise TrainingAborted(
            f"stopped by {name} after step {preemption.stopped_at_step}; checkpoint saved in {checkpoint_dir}. "
            f"Resume with: {_resume_command(recipe)}",
            exit_code=128 + preemption.received,
        )
    return output


def run(recipe: Recipe, *, resume: bool = False) -> RunResult:
    """Fine-tunes the recipe's backbone on its data and writes the output folder.

    Args:
        recipe: a validated recipe.
        resume: continue from the latest complete checkpoint in `<output.dir>/checkpoints` (as does
            `training.resume_from_checkpoint: auto`); with none there, start from the beginning.
    """
    started = time.time()
    out_dir = Path(recipe.output.dir)
    resume = resume or recipe.training.get("resume_from_checkpoint") is not None
    if resume and recipe.output.overwrite:
        raise RecipeError([Problem("output.overwrite", "cannot be combined with resuming; choose one")])
    finished = read_run(out_dir)
    if resume and finished is not None:
        logger.info("%s holds a finished run (completed %s): nothing to resume", out_dir, finished.get("finished_at"))
        return RunResult(output_dir=out_dir, metrics=json.loads((out_dir / "metrics.json").read_text()))
    guard_output_dir(out_dir, recipe.output.overwrite, resume)

    apply_device_defaults(recipe)
    batch_split = resolve_batch(recipe, launched_processes())
    args = build_training_arguments(recipe)
    configure_process_logging(args)
    with args.main_process_first(desc="pre-flight checks"):
        preflight(recipe)  # columns, labels, sample images, model name, metrics: before any heavy work
    if recipe.output.overwrite and args.process_index == 0:
        clear_previous_run(out_dir)
    checkpoint = find_resume_checkpoint(recipe, args) if resume else None
    if args.process_index == 0:
        record_or_compare_recipe(recipe, resuming=checkpoint is not None)

    seed_everything(args)  # before the new head is initialised, so a run is repeatable
    data, model, tokenizer, preprocessing = prepare_data_and_model(recipe, args)
    metrics = ClassificationMetrics(recipe.metrics, list(data.labels.names))
    setup = build_trainer(recipe, args, data, model, tokenizer, metrics)
    trainer = setup.trainer
    setup_s = time.time() - started
    logger.info("Setup took %.1fs (checks, data, model); training starts", setup_s)
    train_output = train_with_safeguards(trainer, recipe, checkpoint)

    results: dict[str, Any] = {}
    for role in ("validation", "test"):
        if role in setup.eval_splits:
            results[role] = evaluate_split(trainer, setup.eval_splits[role], metrics, role)
    results["train"] = {
        "loss": train_output.training_loss,
        "setup_s": round(setup_s, 2),
        "runtime_s": train_output.metrics.get("train_runtime"),
        "samples_per_second": train_output.metrics.get("train_samples_per_second"),
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": trainer.state.best_metric,
        "resumed_from": checkpoint,
        "batch": batch_split,
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        "strategy": recipe.finetune.strategy,
        "phases": setup.plan.phases if setup.plan else [{"phase": 0, "training": "head only, on cached features"}],
        "param_groups": setup.plan.group_summary() if setup.plan else [],
        "class_weights": setup.class_weights,
    }

    staging = staging_dir(out_dir) if trainer.is_world_process_zero() else out_dir / ".staging"
    trainer.accelerator.wait_for_everyone()
    setup.save(staging)  # every process takes part (FSDP/DeepSpeed gather the weights)
    if trainer.is_world_process_zero():
        # The pickled TrainingArguments are not needed to use the model; recipe.yaml records them.
        (staging / "training_args.bin").unlink(missing_ok=True)
        write_yaml(staging / "recipe.yaml", recipe.to_dict())
        write_json(staging / "metrics.json", results)
        manifest = build_manifest(recipe, args, data, preprocessing, started)
        write_report(staging, recipe.to_dict(), results, manifest, trainer.state.log_history)
        publish(staging, out_dir, manifest)
        if not recipe.output.keep_checkpoints:
            shutil.rmtree(checkpoints_dir(out_dir), ignore_errors=True)
        logger.info(summary_line(results, time.time() - started, out_dir))
    trainer.accelerator.wait_for_everyone()
    if recipe.hub.push and trainer.is_world_process_zero():
        # After the last barrier: the other processes need not wait for an upload. A failure raises a
        # PushError that says the local output, published above, is complete.
        push_output(out_dir, recipe.hub.repo_id, private=recipe.hub.private, revision=recipe.hub.revision)
    return RunResult(output_dir=out_dir, metrics=results)


def build_manifest(recipe: Recipe, args: Any, data: PreparedData, preprocessing: dict[str, Any],
                   started: float) -> dict[str, Any]:
    """The run's record (run.json, less the file list that publishing adds)."""
    return {
        "hf_finetune_version": __version__,
        "task": recipe.task,
        "base_model": recipe.model.name,
        "hub_ids": hub_ids(recipe),
        "labels": list(data.labels.names),
        "splits": {role: {"rows": n, "source": data.sources[role]} for role, n in data.sizes.items()},
        "preprocessing": preprocessing,
        "preprocessing_cache": data.cache,
        "skipped_images": data.skipped_images,
        "training": effective_hyperparameters(args),
        "versions": framework_versions(recipe),
        "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - started, 1),
    }


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


def framework_versions(recipe: Recipe) -> dict[str, str]:
    import datasets
    import torch
    import transformers

    versions = {"hf-finetune": __version__, "transformers": transformers.__version__,
                "torch": torch.__version__, "datasets": datasets.__version__}
    if recipe.is_vision:
        import timm

        versions["timm"] = timm.__version__
    return versions
