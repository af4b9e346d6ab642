"""One recipe, end to end: `run(recipe)` reads top to bottom."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_finetune import __version__
from hf_finetune.data import PreparedData, build_datasets
from hf_finetune.data.text import default_max_length
from hf_finetune.errors import Problem, RecipeError
from hf_finetune.hardware import device_defaults
from hf_finetune.logs import configure_process_logging
from hf_finetune.metrics import ClassificationMetrics, logits_to_predictions
from hf_finetune.models import (
    build_text_model,
    build_tokenizer,
    build_vision_model,
    load_text_config,
    load_vision_config,
    vision_data_config,
)
from hf_finetune.outputs import (
    checkpoints_dir,
    clear_previous_run,
    guard_output_dir,
    publish,
    staging_dir,
    write_json,
    write_yaml,
)
from hf_finetune.recipe import Recipe
from hf_finetune.trainer import ClassificationLoss, FinetuneTrainer

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, Any]  # validation / test reports and training figures


def apply_device_defaults(recipe: Recipe) -> None:
    """Adapts the defaults the user did not set to this machine; recorded in the resolved recipe."""
    for key, value in device_defaults(recipe.task).items():
        if key not in recipe._explicit_training:
            recipe.training[key] = value


def build_training_arguments(recipe: Recipe) -> Any:
    """`TrainingArguments` from the recipe's `training` section (plus the keys the pipeline owns)."""
    from transformers import TrainingArguments

    kwargs = dict(recipe.training)
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
        return data, model, tokenizer, {"max_length": max_length}
    data_config = vision_data_config(load_vision_config(recipe.model))
    data = build_datasets(recipe, data_config=data_config, augment=recipe.augmentation.timm_kwargs(),
                          main_process_first=first("reading images"))
    model = build_vision_model(recipe.model, data.labels)
    return data, model, None, {"image": data_config}


def evaluate_split(trainer: Any, dataset: Any, metrics: ClassificationMetrics, prefix: str) -> dict[str, Any]:
    """Scores one split with the recipe's metrics, per-class figures and the confusion matrix."""
    output = trainer.predict(dataset, metric_key_prefix=prefix)
    report = metrics.report(output.predictions, output.label_ids)
    report["loss"] = output.metrics.get(f"{prefix}_loss")
    return report


def run(recipe: Recipe, *, resume: bool = False) -> RunResult:
    """Fine-tunes the recipe's backbone on its data and writes the output folder.

    Args:
        recipe: a validated recipe.
        resume: continue from the latest complete checkpoint in `<output.dir>/checkpoints`.
    """
    started = time.time()
    out_dir = Path(recipe.output.dir)
    apply_device_defaults(recipe)
    args = build_training_arguments(recipe)
    configure_process_logging(args)
    guard_output_dir(out_dir, recipe.output.overwrite, resume)
    if recipe.output.overwrite and not resume and args.process_index == 0:
        clear_previous_run(out_dir)

    seed_everything(args)  # before the new head is initialised, so a run is repeatable
    data, model, tokenizer, preprocessing = prepare_data_and_model(recipe, args)
    metrics = ClassificationMetrics(recipe.metrics, list(data.labels.names))
    trainer = FinetuneTrainer(
        model=model,
        args=args,
        train_dataset=data.splits["train"],
        eval_dataset=data.splits["validation"],
        data_collator=data.collator,
        processing_class=tokenizer,
        compute_metrics=metrics,
        preprocess_logits_for_metrics=logits_to_predictions,
        loss_fn=ClassificationLoss(label_smoothing=args.label_smoothing_factor),
    )
    train_output = trainer.train(resume_from_checkpoint=None)

    results: dict[str, Any] = {}
    for role in ("validation", "test"):
        if role in data.splits:
            results[role] = evaluate_split(trainer, data.splits[role], metrics, role)
    results["train"] = {
        "loss": train_output.training_loss,
        "runtime_s": train_output.metrics.get("train_runtime"),
        "samples_per_second": train_output.metrics.get("train_samples_per_second"),
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": trainer.state.best_metric,
    }

    staging = staging_dir(out_dir) if trainer.is_world_process_zero() else out_dir / ".staging"
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))  # every process takes part (FSDP/DeepSpeed gather the weights)
    if trainer.is_world_process_zero():
        # The pickled TrainingArguments are not needed to use the model; recipe.yaml records them.
        (staging / "training_args.bin").unlink(missing_ok=True)
        write_yaml(staging / "recipe.yaml", recipe.to_dict())
        write_json(staging / "metrics.json", results)
        manifest = {
            "hf_finetune_version": __version__,
            "task": recipe.task,
            "base_model": recipe.model.name,
            "labels": list(data.labels.names),
            "splits": {role: {"rows": n, "source": data.sources[role]} for role, n in data.sizes.items()},
            "preprocessing": preprocessing,
            "preprocessing_cache": data.cache,
            "skipped_images": data.skipped_images,
            "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "wall_time_s": round(time.time() - started, 1),
        }
        publish(staging, out_dir, manifest)
        if not recipe.output.keep_checkpoints:
            shutil.rmtree(checkpoints_dir(out_dir), ignore_errors=True)
        logger.info("Finished in %.0fs: %s", time.time() - started, _summary(results, out_dir))
    trainer.accelerator.wait_for_everyone()
    return RunResult(output_dir=out_dir, metrics=results)


def _summary(results: dict[str, Any], out_dir: Path) -> str:
    parts = []
    for role in ("validation", "test"):
        if role in results:
            shown = ", ".join(
                f"{k} {v:.4f}" for k, v in results[role].items()
                if isinstance(v, float) and k != "loss"
            )
            parts.append(f"{role}: {shown}")
    return "; ".join(parts) + f"; outputs in {out_dir}"

