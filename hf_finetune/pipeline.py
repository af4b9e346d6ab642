"""One recipe, end to end: `run(recipe)` reads top to bottom in three phases, setup, train, finish."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_finetune.data import PreparedData, build_datasets
from hf_finetune.errors import Problem, RecipeError
from hf_finetune.files import write_json, write_yaml
from hf_finetune.logs import configure_process_logging
from hf_finetune.outputs import (
    checkpoints_dir,
    guard_output_dir,
    output_lock,
    prepare_output_dir,
    publish,
    read_finished_run,
    read_run,
    settle_checkpoints,
    staging_dir,
)
from hf_finetune.outputs.lock import is_main_process
from hf_finetune.preflight import preflight
from hf_finetune.recipe import Recipe
from hf_finetune.report.card import write_report
from hf_finetune.report.record import build_manifest, train_record
from hf_finetune.report.summary import summary_line
from hf_finetune.tasks import check_capabilities, task_of
from hf_finetune.training.arguments import build_training_arguments, resolve_training
from hf_finetune.training.assembly import TrainerSetup, build_trainer
from hf_finetune.training.data_aware import (
    apply_decisions,
    data_aware_defaults,
    few_validation_warning,
    hidden_dropout_decision,
    log_decisions,
)
from hf_finetune.training.mirror import mirror_decision
from hf_finetune.training.safeguards import (
    DECISIONS_FILE,
    find_resume_checkpoint,
    record_decisions,
    record_or_compare_recipe,
    recorded_decisions,
    train_with_safeguards,
)
from hf_finetune.training.streams import stream_decisions
from hf_finetune.training.tracking import tracked_run
from hf_finetune.training.trainer import full_precision, run_precision

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, Any]  # validation / test reports and training figures
    published: bool = True  # False when there was nothing to do (a finished run asked to resume)


@dataclass
class Session:
    """Everything setup() prepared for training, and what it resolved for the record."""

    recipe: Recipe
    resolved: dict[str, Any]  # the resolved recipe: the user's, plus every default decided on the way
    args: Any  # TrainingArguments
    data: PreparedData
    setup: TrainerSetup
    metrics: Any  # the task's metrics of the validation split (ClassificationMetrics, EntityMetrics)
    checkpoint: str | None  # resumed from
    batch: dict[str, int]
    preprocessing: dict[str, Any]
    started: float
    setup_s: float


def run(recipe: Recipe, *, resume: bool = False, callbacks: list[Any] | None = None) -> RunResult:
    """Fine-tunes the recipe's backbone on its data and writes the output folder.

    Args:
        recipe: a validated recipe.
        resume: continue from the latest complete checkpoint in `<output.dir>/checkpoints` (as does
            `training.resume_from_checkpoint: auto`); with none there, start from the beginning.
        callbacks: extra `TrainerCallback`s (the search's pruning callback).
    """
    if recipe.self_training is not None:  # its rounds run around setup() and finish(): hf_finetune.run_recipe
        raise RecipeError([Problem("self_training", "a self-training recipe runs through `hf-finetune train` or "
                                   "hf_finetune.train(), which run its rounds around this pipeline")])
    started = time.time()
    out_dir = Path(recipe.output.dir)
    resume = resume or recipe.training.get("resume_from_checkpoint") is not None
    if resume and recipe.output.overwrite:
        raise RecipeError([Problem("output.overwrite", "cannot be combined with resuming; choose one")])
    finished = read_run(out_dir)
    if resume and finished is not None:
        logger.info("%s holds a finished run (completed %s): nothing to resume", out_dir, finished.get("finished_at"))
        return RunResult(output_dir=out_dir, metrics=read_metrics(out_dir), published=False)
    guard_output_dir(out_dir, recipe.output.overwrite, resume)
    if is_main_process():
        prepare_output_dir(out_dir, recipe.output.overwrite)
    with output_lock(out_dir, "train"), tracked_run(recipe.training.get("report_to"), out_dir) as tracking:
        guard_output_dir(out_dir, recipe.output.overwrite, resume)  # again, now that nobody else can change it
        session = setup(recipe, resume, started, callbacks)
        train_output = train_with_safeguards(session.setup.trainer, recipe, session.checkpoint)
        result = finish(session, train_output)
        tracking.log_final(result.metrics, out_dir)  # training.report_to: the final report and the folder
        return result


def setup(recipe: Recipe, resume: bool, started: float, callbacks: list[Any] | None = None,
          extra_train: Any = None) -> Session:
    """Checks, resolves the training settings, prepares data and model, and assembles the Trainer.

    `callbacks`: extra `TrainerCallback`s (the search's pruning callback). `extra_train`: rows in the
    label space appended to the training split (self-training's pseudo-labels).
    """
    out_dir = Path(recipe.output.dir)
    resolved_training = resolve_training(recipe)
    args = build_training_arguments(resolved_training.training, checkpoints_dir(out_dir, recipe.output.overwrite),
                                    recipe.source)
    configure_process_logging(args)
    check_capabilities(recipe)  # the task serves every capability the recipe asks for
    with args.main_process_first(desc="pre-flight checks"):
        preflight(recipe)  # columns, labels, sample images, model name, metrics: before any heavy work
    checkpoint = find_resume_checkpoint(recipe, args) if resume else None

    seed_everything(args)  # before the new head is initialised, so a run is repeatable
    data, model, tokenizer, preprocessing, decided = prepare_data_and_model(recipe, args, extra_train)
    if data.carved is not None:  # recipe.yaml says "carved" (null), so reading it again carves the same rows
        decided["data"] = {"splits": {**recipe.data.splits.model_dump(), "validation": None}}
    if recipe.finetune.data_aware:
        decisions = recorded_decisions(args.output_dir) if checkpoint else None  # a resume decides nothing again
        if decisions is None:
            decisions = data_aware_decisions(recipe, data, model, resolved_training.batch.global_size,
                                             args.per_device_eval_batch_size, args.device, run_precision(args),
                                             evaluations_read=any(getattr(c, "reads_every_evaluation", False)
                                                                  for c in callbacks or ()))
            flip = mirror_decision(recipe, data, model, preprocessing.get("image"), args)
            if flip is not None:
                decisions.append(flip)
            if args.process_index == 0:
                record_decisions(args.output_dir, decisions)
        else:
            logger.info("Resuming with the data-aware defaults the run started with (%s)",
                        Path(args.output_dir) / DECISIONS_FILE)
        flip = next((d for d in decisions if d.key == "augmentation.hflip"), None)
        log_decisions(decisions)
        recipe = apply_decisions(recipe, decisions)  # a copy: the user's recipe stays as it was
        if flip is not None:  # the training images were set up with flips: set them up again without
            set_train_augmentation(data, recipe, preprocessing["image"])
        resolved_training = resolve_training(recipe, log=False)  # the batch split is unchanged
        args = build_training_arguments(resolved_training.training, args.output_dir, recipe.source)
    elif not data.streaming:
        warning = few_validation_warning(recipe, data.label_rows, data.splits["validation"], data.labels.num_labels,
                                         args.load_best_model_at_end)
        if warning:
            logger.warning(warning)
    if args.process_index == 0:
        record_or_compare_recipe(args.output_dir, resolved_recipe(recipe, {"training": resolved_training.training}),
                                 resuming=checkpoint is not None)
    # the task's metrics, and its selection metric (training.metric_for_best_model), on the validation split
    metrics = task_of(recipe).problem.run_metrics(recipe.metrics, data.labels)
    metrics = metrics.for_dataset(data.splits["validation"])
    trainer_setup = build_trainer(recipe, args, data, model, tokenizer, metrics)
    for callback in callbacks or ():
        trainer_setup.trainer.add_callback(callback)
        if hasattr(callback, "watch"):  # reads the evaluations' predictions row by row (search/trials.PauseAt)
            callback.watch(trainer_setup.evaluations)
            trainer_setup.trainer.eval_in_order = True
    if trainer_setup.class_weights is not None:
        decided["finetune"] = {"class_weights": trainer_setup.class_weights}  # the weights used
    if trainer_setup.lora is not None:
        from hf_finetune.training.lora import resolved_settings

        decided.setdefault("finetune", {})["lora"] = resolved_settings(recipe.finetune.lora, trainer_setup.lora)
    setup_s = time.time() - started
    logger.info("Setup took %.1fs (checks, data, model); training starts", setup_s)
    return Session(recipe, resolved_recipe(recipe, {"training": resolved_training.training}, decided), args, data,
                   trainer_setup, metrics, checkpoint, resolved_training.batch.record(), preprocessing, started,
                   setup_s)


def data_aware_decisions(recipe: Recipe, data: PreparedData, model: Any, global_batch: int, eval_batch: int,
                         device: Any, precision: Any = None, evaluations_read: bool = False) -> list[Any]:
    """The defaults this run's data and backbone call for (the mirror check aside): what setup() applies,
    and what `tune` centres its space on (search/defaults.run_decisions). `evaluations_read`: a callback reads
    every evaluation (tune's pruning, rank's pauses), so none is skipped."""
    num_labels = data.labels.num_labels
    if data.streaming:  # read from the head of the stream: the row count is not the data's
        return stream_decisions(data_aware_defaults(recipe, data.label_rows, num_labels, model, global_batch),
                                len(data.label_rows))
    return data_aware_defaults(recipe, data.label_rows, num_labels, model, global_batch,
                               *few_label_inputs(recipe, data, model, eval_batch, device, precision),
                               pseudo_rows=data.pseudo_rows, evaluations_read=evaluations_read)


def few_label_inputs(recipe: Recipe, data: PreparedData, model: Any, batch_size: int, device: Any,
                     precision: Any = None) -> tuple[Any, Any]:
    """Validation rows per class, and the training rows' features on demand: what a few-label probe's
    k-fold needs (training/few_label.py)."""
    from hf_finetune.training.data_aware import class_counts
    from hf_finetune.training.few_label import training_features

    if "validation" not in data.splits:
        return None, None
    counts = class_counts(data.splits["validation"], data.labels.num_labels, task_of(recipe).problem.labeling)
    return counts, lambda: training_features(model, data.splits["train"], data.collator, batch_size, device, precision)


def finish(session: Session, train_output: Any, extra_results: dict[str, Any] | None = None) -> RunResult:
    """Scores validation and test, then writes, publishes (and pushes) the output folder.

    `extra_results`: entries added to metrics.json (self-training's rounds), for the card too.
    """
    results: dict[str, Any] = {}
    for role in ("validation", "test"):
        if role in session.setup.eval_splits:
            results[role] = score_split(session, role)
    results["train"] = train_record(session, train_output)
    problem = task_of(session.recipe).problem
    counts = problem.labeling.counts(session.data.label_rows, session.data.labels.num_labels)  # a stream: its head
    results["warnings"] = problem.baselines(results, counts)  # the trivial model's scores, the collapse test
    results.update(extra_results or {})
    publish_run(session, results)
    return RunResult(output_dir=Path(session.recipe.output.dir), metrics=results)


def publish_run(session: Session, results: dict[str, Any]) -> None:
    """Saves the model and report into the staging folder and publishes it."""
    recipe, trainer = session.recipe, session.setup.trainer
    out_dir = Path(recipe.output.dir)
    staging = staging_dir(out_dir) if trainer.is_world_process_zero() else out_dir / ".staging"
    trainer.accelerator.wait_for_everyone()
    # after the final evaluation: what the model keeps of it (label sets: thresholds; regression: the target scale)
    task_of(recipe).problem.settle(session.setup.model, session.data.labels, results)
    session.setup.save(staging)  # every process takes part (FSDP/DeepSpeed gather the weights)
    if trainer.is_world_process_zero():
        # The pickled TrainingArguments are not needed to use the model; recipe.yaml records them.
        (staging / "training_args.bin").unlink(missing_ok=True)
        write_yaml(staging / "recipe.yaml", session.resolved)
        figures = task_of(recipe).problem.figures(trainer.model, session.data, staging)  # segmentation: masks
        if figures:
            results["figures"] = figures
        write_json(staging / "metrics.json", results)
        manifest = build_manifest(recipe, session.args, session.data, session.preprocessing, session.started)
        write_report(staging, session.resolved, results, manifest, trainer.state.log_history)
        publish(staging, out_dir, manifest)  # the previous finished run, if any, stays until this moment
        settle_checkpoints(out_dir, recipe.output.overwrite, recipe.output.keep_checkpoints)
        for warning in results["warnings"]:
            logger.warning(warning)
        logger.info(summary_line(results, time.time() - session.started, out_dir))  # the last line
    trainer.accelerator.wait_for_everyone()  # with hub.push, the caller uploads after this (hf_finetune.run_recipe)


def resolved_recipe(recipe: Recipe, *decided: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The recipe as a plain mapping with what the run decided (section -> keys) merged in, once."""
    out = copy.deepcopy(recipe.to_dict())
    for part in decided:
        for section, values in part.items():
            out.setdefault(section, {})
            if section == "training":
                out[section] = dict(values)  # the whole resolved section
            else:
                out[section].update(values)
    return out


def read_metrics(out_dir: Path) -> dict[str, Any]:
    return read_finished_run(out_dir).metrics


def seed_everything(args: Any) -> None:
    from transformers import enable_full_determinism, set_seed

    if args.full_determinism:
        enable_full_determinism(args.seed)
    else:
        set_seed(args.seed)


def prepare_data_and_model(recipe: Recipe, args: Any, extra_train: Any = None
                           ) -> tuple[PreparedData, Any, Any, dict[str, Any], dict]:
    """Builds the preprocessed data, then the backbone with a head sized to the data's label space.

    Returns:
        (data, model, tokenizer or None, preprocessing settings for run.json, the recipe keys decided
        here as {section: {key: value}} for the resolved recipe).
    """
    return build_data_and_model(recipe, pad_multiple=8 if (args.bf16 or args.fp16) else None,  # tensor cores
                                main_process_first=lambda verb: args.main_process_first(desc=verb),
                                process=(args.process_index, args.world_size), extra_train=extra_train)


def build_data_and_model(recipe: Recipe, *, pad_multiple: int | None = None, main_process_first: Any = None,
                         process: tuple[int, int] = (0, 1), extra_train: Any = None
                         ) -> tuple[PreparedData, Any, Any, dict[str, Any], dict]:
    """prepare_data_and_model without TrainingArguments: also what `tune` reads the run's defaults from.

    `main_process_first`: verb -> context manager (under several processes the main one preprocesses first).
    """
    import contextlib

    task = task_of(recipe)
    # Cached features are computed once, so every split gets the evaluation preprocessing.
    prep = task.inputs.preprocessing(recipe, augment=not recipe.finetune.cache_features,
                                     pad_to_multiple_of=pad_multiple)
    first = (lambda: main_process_first(prep.verb)) if main_process_first else contextlib.nullcontext
    data = build_datasets(recipe, prep.encoding, main_process_first=first,
                          extra_train=extra_train, labeling=task.problem.labeling, process=process)
    spec = recipe.model
    dropout = hidden_dropout_decision(recipe, task.inputs, data)  # before the dropout layers take their rate
    if dropout is not None:
        log_decisions([dropout])
        spec = apply_decisions(recipe, [dropout]).model
    model = task.inputs.build_backbone(spec, data.labels, prep.tokenizer)  # the task's head on the backbone
    decided = dict(prep.decided)
    decided["model"] = task.inputs.finish_model(recipe, model, prep, data)
    return data, model, prep.tokenizer, prep.record, decided


def set_train_augmentation(data: PreparedData, recipe: Recipe, data_config: dict[str, Any]) -> None:
    """The training images' transform, built again from the recipe's (decided) augmentation."""
    from hf_finetune.data.vision import ImageTransform, build_image_transforms

    train_tf, _ = build_image_transforms(data_config, recipe.augmentation.timm_kwargs())
    data.splits["train"].set_transform(ImageTransform(recipe.data.columns.image, train_tf))


def score_split(session: Session, role: str) -> dict[str, Any]:
    """The report of one of the session's evaluation splits after training. Validation comes from the kept
    weights' own evaluation where that ran in full precision (training/kept_evaluation.py: the same
    predictions, without a second pass); otherwise the split is scored again (evaluate_split)."""
    setup, dataset = session.setup, session.setup.eval_splits[role]
    kept = setup.evaluations.kept(setup.trainer) if role == "validation" and setup.evaluations else None
    if kept is None:
        return evaluate_split(setup.trainer, dataset, session.metrics, role)
    step, predictions, label_ids, loss = kept
    logger.info("Validation figures: the evaluation at step %d, of the kept weights in full precision "
                "(no second pass)", step)
    return {**session.metrics.for_dataset(dataset).report(predictions, label_ids), "loss": loss}


def evaluate_split(trainer: Any, dataset: Any, metrics: Any, prefix: str) -> dict[str, Any]:
    """Scores one split with the recipe's metrics, per-class figures and the confusion matrix (per entity
    type for tags), in full precision: the figures of the weights as saved, whatever mixed precision
    training used."""
    with full_precision(trainer.model):
        output = trainer.predict(dataset, metric_key_prefix=prefix)
    report = metrics.for_dataset(dataset).report(output.predictions, output.label_ids)
    report["loss"] = output.metrics.get(f"{prefix}_loss")
    return report
