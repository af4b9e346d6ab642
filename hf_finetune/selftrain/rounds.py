"""Self-training rounds around the pipeline's own setup and finish.

    round 0      the pipeline's training on the labelled rows alone
    round r      the best model so far labels the pool; confident labels (thresholds or top share,
                 then the per-class cap by labelled rows and the class share cap) join the labelled
                 rows; a model trains on both, the way round 0 chose (probe or fine-tuning), from the
                 backbone or from the best model (self_training.init)
    stop         after self_training.rounds, when a round does not raise the validation selection
                 metric by more than self_training.min_improvement, or when no pseudo-label is kept
    publish      the best round's model, through the pipeline's finish: the ordinary output folder,
                 published atomically, with every round in metrics.json and in the card

Each round's record is logged and saved (metrics.json's `self_training`, and during the run
`self_training.json` beside the checkpoints): pool size, kept rows per class, validation metrics,
and the pseudo-labels' accuracy when the pool has true labels.
"""

from __future__ import annotations

import gc
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_finetune import pipeline
from hf_finetune.errors import DataError, Problem, RecipeError
from hf_finetune.files import write_json
from hf_finetune.outputs import guard_output_dir, output_lock, prepare_output_dir
from hf_finetune.outputs.lock import is_main_process
from hf_finetune.recipe import Recipe
from hf_finetune.selftrain.pool import load_pool, pseudo_labelled_rows, truth_ids
from hf_finetune.selftrain.predict import model_ready_pool, predict_probabilities
from hf_finetune.selftrain.select import (
    Selection,
    accuracy,
    class_thresholds,
    select_pseudo_labels,
    threshold_curve,
    top_share_curve,
)
from hf_finetune.tasks import task_of
from hf_finetune.training.safeguards import train_with_safeguards

logger = logging.getLogger(__name__)

RECORD_FILE = "self_training.json"  # beside the checkpoints while the rounds run


@dataclass
class Round:
    """A trained round: its session (model, trainer), the Trainer's output and its record."""

    number: int
    session: pipeline.Session
    train_output: Any
    record: dict[str, Any]


def run_self_training(recipe: Recipe, *, resume: bool = False) -> pipeline.RunResult:
    """Runs round 0 and the self-training rounds, then publishes the best round's model.

    Raises:
        RecipeError: asked to resume (the rounds always start again).
        DataError: the pool is empty or does not match the recipe's columns; a class threshold
            names no label; the class share cap is below 1 / classes.
    """
    if resume or recipe.training.get("resume_from_checkpoint") is not None:
        raise RecipeError([Problem("self_training", "a self-training run cannot be resumed: its rounds start "
                                                    "again; run it without --resume / training.resume_from_checkpoint")])
    started = time.time()
    out_dir = Path(recipe.output.dir)
    guard_output_dir(out_dir, recipe.output.overwrite, False)
    if is_main_process():
        prepare_output_dir(out_dir, recipe.output.overwrite)
    with output_lock(out_dir, "train"):
        guard_output_dir(out_dir, recipe.output.overwrite, False)
        return _run_rounds(recipe, started)


def selection_metric(args: Any) -> tuple[str, bool]:
    """The validation metric rounds are compared on (the run's model-selection metric) and its direction."""
    if args.metric_for_best_model:
        return args.metric_for_best_model.removeprefix("eval_"), bool(args.greater_is_better)
    return "loss", False


def improves(value: float, best: float, greater: bool, min_improvement: float) -> bool:
    """Whether `value` beats `best` by more than `min_improvement` in the metric's direction."""
    return value - best > min_improvement if greater else best - value > min_improvement


def _run_rounds(recipe: Recipe, started: float) -> pipeline.RunResult:
    st = recipe.self_training
    session = pipeline.setup(recipe, False, started)  # its pre-flight checks the pool too, before any heavy work
    pool = load_pool(recipe)
    logger.info("Unlabelled pool: %d rows from %s%s", len(pool), pool.where,
                "; its label column is used only to score the pseudo-labels" if pool.truth is not None else "")
    labels = session.data.labels
    names = list(labels.names)
    thresholds = class_thresholds(names, st.threshold, st.class_thresholds)
    if st.max_class_share is not None and st.max_class_share * len(names) < 1:
        raise DataError(f"self_training.max_class_share: {st.max_class_share} is below 1/{len(names)}: with "
                        f"{len(names)} classes no mix of pseudo-labels can keep every class under it")
    truth = truth_ids(pool, labels)
    top_share = st.resolved_top_share()
    class_caps = pseudo_label_caps(st.max_per_labelled, labelled_counts(session), names, len(pool))
    few_validation = _few_validation_rows(session)
    ready = model_ready_pool(recipe, pool, session.setup.tokenizer, session.preprocessing)
    metric, greater = selection_metric(session.args)
    work = Path(session.args.output_dir)
    summary: dict[str, Any] = {
        "metric": metric, "greater_is_better": greater, "init": st.init, "threshold": st.threshold,
        "top_share": top_share,
        "rounds_compared_on": "validation" if few_validation is None else
        f"none: validation holds {few_validation} rows of a class, every round runs and the last is kept",
        "class_thresholds": dict(zip(names, thresholds.tolist(), strict=True)),
        "max_per_labelled": st.max_per_labelled,
        "class_caps": None if class_caps is None else dict(zip(names, class_caps.tolist(), strict=True)),
        "max_class_share": st.max_class_share, "min_improvement": st.min_improvement, "max_rounds": st.rounds,
        "pool": {"rows": len(pool), "source": pool.where,
                 "labelled_rows": int((truth >= 0).sum()) if truth is not None else 0},
        "labelled_rows": len(session.data.splits["train"]), "rounds": [],
    }

    best = _train_round(0, session, recipe, {"pool_rows": len(pool), "kept": 0,
                                             "kept_per_class": dict.fromkeys(names, 0)})
    summary["rounds"].append(best.record)
    _save(work, summary)
    stopped = f"all {st.rounds} rounds ran"
    trained_on: Selection | None = None  # the pseudo-labels the best round trained on
    for number in range(1, st.rounds + 1):
        probs = predict_probabilities(best.session.setup.model, ready, session.data.collator,
                                      session.args.per_device_eval_batch_size, session.args)
        selection = select_pseudo_labels(probs, thresholds, st.max_class_share, top_share, class_caps)
        pseudo = _pseudo_label_record(probs, selection, truth, names)
        _log_selection(number, pseudo)
        if selection.kept == 0:
            summary["rounds"].append({"round": number, "trained": False, **pseudo})
            stopped = (f"round {number} kept no pseudo-label (" + (
                "no pool row reached its class's threshold" if selection.confident_per_class.sum() == 0 else
                f"the caps left none of its {int(selection.confident_per_class.sum())} confident rows: "
                "self_training.max_per_labelled, max_class_share") + ")")
            break
        if st.init == "backbone" and trained_on is not None and _same(selection, trained_on):
            summary["rounds"].append({"round": number, "trained": False, **pseudo})
            stopped = (f"round {number} kept the pseudo-labels round {best.number} trained on: from the backbone, "
                       "the same data trains the same model")
            break
        _clear_checkpoints(work)
        extra = pseudo_labelled_rows(pool, selection.indices, selection.labels, labels)
        session = pipeline.setup(recipe, False, started, extra_train=extra)
        if st.init == "continue":
            session.setup.model.load_state_dict(best.session.setup.model.state_dict())
        current = _train_round(number, session, recipe, pseudo)
        value, best_value = current.record["validation"][metric], best.record["validation"][metric]
        # With a validation of a few rows per class a comparison is noise: every round runs, the last is kept.
        better = few_validation is not None or improves(value, best_value, greater, st.min_improvement)
        current.record["improved"] = improves(value, best_value, greater, st.min_improvement)
        summary["rounds"].append(current.record)
        _save(work, summary)
        logger.info("Self-training round %d: validation %s %.4f, %s the best so far (%.4f, round %d)%s", number,
                    metric, value, "above" if current.record["improved"] else "not above", best_value, best.number,
                    "; kept as the latest round (validation too small to compare on)" if few_validation is not None
                    else "")
        if not better:
            stopped = (f"round {number} did not raise validation {metric} above {best_value:.4f} (round "
                       f"{best.number}) by more than {st.min_improvement:g}")
            del current, session
            break
        best, trained_on = current, selection
        gc.collect()
    summary["best_round"] = best.number
    summary["stopped"] = stopped
    for record in summary["rounds"]:
        record["selected"] = record["round"] == best.number
    logger.info("Self-training: the model of round %d is kept (%s); %s", best.number,
                f"validation {metric} {best.record['validation'][metric]:.4f}", stopped)
    _save(work, summary)
    return pipeline.finish(best.session, best.train_output, extra_results={"self_training": summary})


def _train_round(number: int, session: pipeline.Session, recipe: Recipe, pseudo: dict[str, Any]) -> Round:
    began = time.time()
    output = train_with_safeguards(session.setup.trainer, recipe, None)
    record: dict[str, Any] = {"round": number, "trained": True, "train_rows": len(session.data.splits["train"]),
                              **pseudo}
    for role in ("validation", "test"):
        if role == "test" and not recipe.self_training.score_test_each_round:
            continue
        if role in session.setup.eval_splits:
            report = pipeline.score_split(session, role)
            record[role] = {k: v for k, v in report.items() if isinstance(v, (int, float)) and k != "num_samples"}
    record["epochs"] = session.setup.trainer.state.epoch
    record["strategy"] = session.recipe.finetune.strategy  # round 0's choice in every round (data_aware_defaults)
    record["seconds"] = round(time.time() - began, 1)
    return Round(number, session, output, record)


def _pseudo_label_record(probs: np.ndarray, selection: Selection, truth: np.ndarray | None,
                         names: list[str]) -> dict[str, Any]:
    """What a round's teacher did with the pool: kept rows per class, and how right they were when known."""
    record: dict[str, Any] = {
        "pool_rows": int(len(probs)),
        "confident": int(selection.confident_per_class.sum()),
        "kept": selection.kept,
        "kept_per_class": dict(zip(names, selection.kept_per_class.tolist(), strict=True)),
        "mean_confidence": float(probs.max(axis=1).mean()) if len(probs) else None,
    }
    if truth is not None:
        predicted = probs.argmax(axis=1)
        kept_truth = truth[selection.indices]
        record["pseudo_label_accuracy"], record["scored_rows"] = accuracy(selection.labels, kept_truth)
        record["pool_accuracy"] = accuracy(predicted, truth)[0]
        per_class = {}
        for c, name in enumerate(names):
            mine = selection.labels == c
            per_class[name] = accuracy(selection.labels[mine], kept_truth[mine])[0]
        record["pseudo_label_accuracy_per_class"] = per_class
    record["threshold_curve"] = threshold_curve(probs, truth)
    record["top_share_curve"] = top_share_curve(probs, truth)
    return record


def pseudo_label_caps(per_labelled: float | None, labelled: np.ndarray, names: list[str],
                      pool_rows: int) -> np.ndarray | None:
    """The most pseudo-labels each class may keep in a round: `per_labelled` x its labelled rows (None: no cap).

    Raises:
        DataError: a class with labelled rows would be capped at 0 (it could never be pseudo-labelled).
    """
    if per_labelled is None:
        return None
    caps = np.floor(np.minimum(per_labelled * labelled, pool_rows)).astype(np.int64)  # a huge value: the pool
    shut = [f"'{name}' ({count})" for name, count, cap in zip(names, labelled, caps, strict=True) if count and not cap]
    if shut:
        raise DataError(f"self_training.max_per_labelled: {per_labelled:g} x the labelled rows of {', '.join(shut)} is "
                        "below one pseudo-label: that class could never be pseudo-labelled; raise it (or null: no cap)")
    unlabelled = [name for name, count in zip(names, labelled, strict=True) if not count]
    if unlabelled:
        logger.warning("Self-training: %s %s no labelled training row, so no pseudo-label either "
                       "(self_training.max_per_labelled caps a class by its labelled rows)", ", ".join(unlabelled),
                       "has" if len(unlabelled) == 1 else "have")
    logger.info("Self-training: a class keeps at most %g pseudo-labels per labelled row a round (its most "
                "confident): %s", per_labelled, ", ".join(f"{n} {c}" for n, c in zip(names, caps, strict=True)))
    return caps


def labelled_counts(session: pipeline.Session) -> np.ndarray:
    """Round 0's training rows per class: the true labels the pseudo-labels are capped against."""
    from hf_finetune.training.data_aware import class_counts

    return class_counts(session.data.splits["train"], session.data.labels.num_labels,
                        task_of(session.recipe).problem.labeling)


def _few_validation_rows(session: pipeline.Session) -> int | None:
    """The validation rows of the rarest training class, when too few to compare rounds on (None otherwise)."""
    from hf_finetune.training.data_aware import class_counts
    from hf_finetune.training.few_label import KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS

    splits = session.data.splits
    if "validation" not in splits:
        return None
    validation = class_counts(splits["validation"], session.data.labels.num_labels,
                              task_of(session.recipe).problem.labeling)[labelled_counts(session) > 0]
    rarest = int(validation.min()) if len(validation) else 0
    if rarest >= KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS:
        return None
    logger.info("Self-training: validation holds %d rows of a class (fewer than %d): rounds are not compared on "
                "it; every round runs and the last one is kept", rarest, KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS)
    return rarest


def _same(a: Selection, b: Selection) -> bool:
    return np.array_equal(a.indices, b.indices) and np.array_equal(a.labels, b.labels)


def _log_selection(number: int, pseudo: dict[str, Any]) -> None:
    kept = ", ".join(f"{k} {v}" for k, v in pseudo["kept_per_class"].items())
    scored = pseudo.get("pseudo_label_accuracy")
    logger.info("Self-training round %d: %d of %d pool rows kept as pseudo-labels (%s)%s", number, pseudo["kept"],
                pseudo["pool_rows"], kept, "" if scored is None else f"; their accuracy {scored:.3f}")


def _clear_checkpoints(work: Path) -> None:
    """The previous round's checkpoints: its best weights are in memory, and a new Trainer starts at step 0."""
    for path in work.glob("checkpoint-*"):
        if path.is_dir():
            shutil.rmtree(path)


def _save(work: Path, summary: dict[str, Any]) -> None:
    if is_main_process():
        work.mkdir(parents=True, exist_ok=True)
        write_json(work / RECORD_FILE, summary)
