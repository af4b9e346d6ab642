"""Score a finished run's model on another split or a new labelled file, with the run's own metrics.

The run's resolved recipe (recipe.yaml in the output folder) supplies the columns, the metrics and
the preprocessing; `--data` replaces only where the rows come from. The label space is the
model's (config.json `id2label`): a label in the new data that the model does not know is an error
that names it, never a silent new class.

    evaluation-<name>.json                     the report, in the format of metrics.json's split entries
    evaluation-<name>-confusion_matrix.png     its confusion matrix
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_finetune.errors import DataError, NotAFinishedRunError, UserError
from hf_finetune.files import write_json
from hf_finetune.outputs import (
    check_writable_dir,
    make_output_dir,
    output_lock,
    read_finished_run,
    read_run,
    record_files,
)
from hf_finetune.predictor import EnsemblePredictor, combine_probabilities, load_predictor, probabilities
from hf_finetune.recipe import FILE_FORMATS, Recipe, validate_recipe
from hf_finetune.tasks import get_task

logger = logging.getLogger(__name__)

SOURCE_KEYS = ("dataset", "config", "revision", "files", "image_folder", "mask_folder")


@dataclass
class Evaluation:
    """A finished evaluation: its name, its report and the files written."""

    name: str
    report: dict[str, Any]  # metrics.json split format: metrics, loss, per_class, confusion_matrix, num_samples
    files: list[Path]


def evaluation_recipe(out_dir: Path, data: str | None, split: str | None, column: str | None = None,
                      label_column: str | None = None) -> tuple[Recipe, str | None, str | None]:
    """The run's recipe with its data source replaced by `data` (when given).

    Returns:
        (recipe, the split to score or None for "the only one, else test", what the data is called in
        file names: None for the run's own data, whose files are named after the split alone).

    Raises:
        UserError: the folder has no recipe.yaml, or `data`/`split` cannot be used.
    """
    from hf_finetune.finished.splits import run_recipe

    # The run's recipe with a carved validation marked as carved, so the run's own splits rebuild as trained on.
    raw = run_recipe(read_finished_run(out_dir)) if read_run(out_dir) is not None else {}
    if not raw:
        raise UserError(f"OUTPUT_DIR: {out_dir} has no recipe.yaml, so the columns and metrics are unknown")
    section = raw.setdefault("data", {})
    columns = section.setdefault("columns", {})
    if column:
        columns[get_task(raw.get("task", "")).inputs.input_keys[0]] = column
    if label_column:
        columns[get_task(raw.get("task", "")).inputs.label_key] = label_column
    section["max_samples"] = {}
    called = None
    if data is None:
        split = split or (section.get("splits") or {}).get("test")
        if split is None:
            raise UserError("--split: the run had no test split; name the split to score (e.g. --split validation)")
    else:
        original, original_config = section.get("dataset"), section.get("config")
        for key in SOURCE_KEYS:
            section[key] = None
        path = Path(data).expanduser()
        if path.is_file():
            if path.suffix.lower() not in FILE_FORMATS:
                raise UserError(f"--data: {data}: unsupported file type; use {', '.join(FILE_FORMATS)}")
            if split is not None:
                raise UserError(f"--split: {data} is a file, which is a single split; leave --split out")
            split = called = path.stem
            section["files"] = {split: [str(path)]}
        elif path.is_dir():
            is_saved = (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists()
            if get_task(raw.get("task", "")).inputs.folder_key and not is_saved:
                section[get_task(raw["task"]).inputs.folder_key] = str(path)
            else:
                section["dataset"] = str(path)
            called = path.name
        elif data.startswith((".", "/", "~")) or Path(data).suffix.lower() in FILE_FORMATS:
            raise UserError(f"--data: no such file or folder: {data}")
        else:  # a Hub dataset id
            section["dataset"] = data
            if data == original:  # the run's own Hub dataset: keep its configuration
                section["config"] = original_config
            called = data.split("/")[-1]
    section.pop("unlabeled", None)  # self-training's pool: how the model was made, not what is scored
    raw.pop("self_training", None)
    raw["data"] = section
    raw["model"] = {**(raw.get("model") or {}), "name": str(out_dir)}
    raw["output"] = {"dir": str(out_dir)}
    raw["hub"] = {}
    return validate_recipe(raw, source=str(out_dir / "recipe.yaml"), purpose="evaluate"), split, called


def slug(name: str) -> str:
    """`name` made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "eval"


def evaluate_output(out_dir: str | os.PathLike, data: str | None = None, split: str | None = None, *,
                    column: str | None = None, label_column: str | None = None, name: str | None = None,
                    output_dir: str | os.PathLike | None = None, batch_size: int = 32) -> Evaluation:
    """Scores a finished run's model on a split of its own data or on new data, and writes the report.

    Args:
        out_dir: the finished run's output folder.
        data: a data file (csv/tsv/json/jsonl/parquet), an image folder, a saved dataset folder or a
            Hub dataset id; None scores a split of the run's own data.
        split: the split to score (default: the run's test split; for new data its only split, else test).
        column, label_column: input and label columns of the new data (default: the run's).
        name: names the files written (default: from the data and split).
        output_dir: where to write (default: `out_dir`, where run.json then lists the files).
        batch_size: rows per forward pass.

    Raises:
        UserError: naming the argument, file, split, column or label that is wrong.
    """
    if not Path(out_dir).is_dir():
        raise NotAFinishedRunError(f"OUTPUT_DIR: {out_dir} is not a folder")
    if output_dir is not None:
        check_writable_dir(output_dir, "--output-dir")  # before the scoring, not after it
    with output_lock(out_dir, "evaluate", "OUTPUT_DIR"):  # a run overwriting the folder would change the model
        return _evaluate(Path(out_dir), data, split, column, label_column, name, output_dir, batch_size)


def _evaluate(out_dir: Path, data: str | None, split: str | None, column: str | None, label_column: str | None,
              name: str | None, output_dir: str | os.PathLike | None, batch_size: int) -> Evaluation:
    from hf_finetune.report.plots import plot_confusion_matrix
    from hf_finetune.report.regression_plots import plot_regression

    out_dir = Path(out_dir)
    predictor = load_predictor(out_dir)  # checks the folder holds a model, and loads it once
    recipe, split, called = evaluation_recipe(out_dir, data, split, column, label_column)
    if recipe.task != predictor.task:
        raise UserError(f"OUTPUT_DIR: recipe.yaml says {recipe.task}, but the model is for {predictor.task}")
    run = read_finished_run(out_dir) if data is None and read_run(out_dir) is not None else None  # its own splits
    if getattr(predictor, "members", None):  # an ensemble: each member preprocesses the data itself
        predictions, references, loss, split, rows = score_ensemble(predictor, recipe, split, batch_size, run)
        dataset = None
    else:
        prepared, split = predictor_eval_dataset(recipe, split, predictor, run)
        dataset = prepared.splits["eval"]
        rows = len(dataset)
        predictions, references, loss = run_model(predictor.model, dataset, prepared.collator, batch_size)
    if name is None:
        name = split if called is None else called if called == split else f"{called}-{split}"
    name = slug(name)
    config = predictor.model.config if predictor.model is not None else None
    # a finished model's metrics: what its config stores (label sets: the thresholds tuned on validation)
    metrics = get_task(recipe.task).problem.finished_metrics(recipe.metrics, list(predictor.labels), config)
    report = (metrics.for_dataset(dataset) if dataset is not None else metrics).report(predictions, references)
    report["loss"] = loss
    report["source"] = {
        "data": data if data is not None else f"the run's data ({_describe(recipe)})",
        "split": split,
        "rows": rows,
        "evaluated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }

    dest = make_output_dir(output_dir if output_dir is not None else out_dir,
                           "--output-dir" if output_dir is not None else "OUTPUT_DIR")
    json_path = dest / f"evaluation-{name}.json"
    plot_path = dest / f"evaluation-{name}-confusion_matrix.png"
    write_json(json_path, report)
    files = [json_path]
    try:
        if plot_confusion_matrix(report, plot_path, f"Confusion matrix ({name})"):  # none for entity reports
            files.append(plot_path)
        scatter_path = dest / f"evaluation-{name}-predicted_vs_true.png"
        if plot_regression(report, scatter_path, f"Predicted vs true, residuals ({name})"):  # regression reports
            files.append(scatter_path)
    except Exception:  # the numbers are written; a drawing problem must not hide them
        logger.warning("Could not draw %s", plot_path, exc_info=True)
    if dest.resolve() == out_dir.resolve() and read_run(out_dir) is not None:
        record_files(out_dir, [f.name for f in files])  # so push uploads them, and overwrite clears them
    return Evaluation(name=name, report=report, files=files)


def _describe(recipe: Recipe) -> str:
    data = recipe.data
    return data.dataset or data.image_folder or ", ".join(p for paths in (data.files or {}).values() for p in paths)


def run_model(model: Any, dataset: Any, collator: Any, batch_size: int) -> tuple[list, list, float]:
    """Predicted class ids, label ids and mean cross-entropy loss over a dataset, in its order; for a
    token-classification model, a list of tag ids per row (-100 where no word starts) and the loss per
    scored token."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
    predictions: list = []
    references: list = []
    total, count = 0.0, 0
    # float labels are numbers (regression) or 0/1 rows (label sets): the saved config says which
    label_sets = getattr(getattr(model, "config", None), "problem_type", None) == "multi_label_classification"
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            if labels.is_floating_point() and label_sets:  # label sets: BCE per label, the sigmoid scores kept
                total += F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(-1).sum().item()
                count += len(labels)
                predictions += torch.sigmoid(logits).tolist()
                references += labels.tolist()
                continue
            if labels.is_floating_point():  # numbers (regression): squared error per target, the values kept
                values = logits.reshape(labels.shape)
                total += F.mse_loss(values, labels.float(), reduction="sum").item()
                count += labels.numel()
                predictions += values.tolist()
                references += labels.tolist()
                continue
            if logits.ndim == 3:  # a tag per token: the loss over the scored tokens
                scored = labels != -100
                total += F.cross_entropy(logits[scored], labels[scored], reduction="sum").item()
                count += int(scored.sum())
            elif logits.ndim == 4:  # a class per pixel (batch, classes, height, width): the loss per scored pixel
                total += F.cross_entropy(logits, labels, reduction="sum", ignore_index=-100).item()
                count += int((labels != -100).sum())
                predictions += list(logits.argmax(dim=1).numpy())
                references += list(labels.numpy())
                continue
            else:
                total += F.cross_entropy(logits, labels, reduction="sum").item()
                count += len(labels)
            predictions += logits.argmax(dim=-1).tolist()
            references += labels.tolist()
    if not references:
        raise DataError("nothing to evaluate: the split has no rows left")
    return predictions, references, total / max(count, 1)


def format_evaluation(evaluation: Evaluation) -> str:
    """A few readable lines: the metrics, then precision/recall/F1/support per class."""
    report = evaluation.report
    skip = {"per_class", "confusion_matrix", "num_samples", "source", "predicted_outside", "true_outside",
            "thresholds", "label_sets"}
    scalars = "  ".join(f"{k} {v:.4f}" for k, v in report.items() if k not in skip and isinstance(v, float))
    lines = [f"{evaluation.name}: {report['num_samples']} rows (split '{report['source']['split']}')", f"  {scalars}"]
    if "per_target" in report:  # regression: each target's figures
        for target, v in report["per_target"].items():
            lines.append(f"  {target}: " + "  ".join(f"{k} {v[k]:.4f}" for k in ("pearson", "spearman", "rmse", "mae", "r2")))
        return "\n".join(lines) + "\n"
    per_class = report.get("per_class") or {}
    width = max([len(label) for label in per_class] + [5])
    first = "type" if "entities" in report else "class"  # entity types of token classification
    if per_class and "iou" in next(iter(per_class.values())):  # pixels (segmentation): IoU and Dice per class
        lines.append(f"  {first:<{width}}  iou     dice    pixels")
        for label, v in per_class.items():
            lines.append(f"  {label:<{width}}  {v['iou']:.4f}  {v['dice']:.4f}  {v['support']}")
        return "\n".join(lines) + "\n"
    lines.append(f"  {first:<{width}}  precision  recall  f1      support")
    for label, v in per_class.items():
        lines.append(f"  {label:<{width}}  {v['precision']:.4f}     {v['recall']:.4f}  {v['f1']:.4f}  {v['support']}")
    return "\n".join(lines) + "\n"


def predictor_eval_dataset(recipe: Any, split: str, predictor: Any, run: Any = None) -> tuple[Any, str]:
    """`split` preprocessed for `predictor`'s model: its tokenizer and max_length, or its image config.

    `run`: the finished run whose own data `recipe` reads; a validation split it carved from train (and
    train without it) is then rebuilt as the run trained on it (finished/splits.py).
    """
    from hf_finetune.data import build_eval_dataset
    from hf_finetune.finished.splits import carved_role, rebuild_eval_split

    role = carved_role(run, split) if run is not None else None
    if role is not None:
        return rebuild_eval_split(run, recipe, role, predictor), split
    task = get_task(predictor.task)
    encoding = task.inputs.finished_encoding(predictor)
    return build_eval_dataset(recipe, split, predictor.labels, encoding, labeling=task.problem.labeling)


def score_ensemble(predictor: EnsemblePredictor, recipe: Any, split: str | None, batch_size: int,
                   run: Any = None) -> tuple[list[int], list[int], float, str, int]:
    """The ensemble's predictions on one split of `recipe`'s data, each member preprocessing it itself.

    `run`: the ensemble folder when `recipe` reads its own data: a carved validation is rebuilt as its
    first member trained on it, after checking that every member carved the same rows.

    Returns:
        (predicted ids, label ids, cross-entropy of the mean probabilities, the split scored, rows).
    """
    from hf_finetune.finished.splits import carved_role, check_same_carve

    if run is not None and carved_role(run, split) is not None:
        check_same_carve([read_finished_run(folder) for folder in run.member_folders()], "OUTPUT_DIR",
                         "score the ensemble on labelled data none of them trained on with --data")
    probs, references, name = [], None, split
    for member in predictor.members:
        prepared, name = predictor_eval_dataset(recipe, split, member, run)
        p, refs = probabilities(member.model, prepared.splits["eval"], prepared.collator, batch_size)
        if references is not None and not np.array_equal(references, refs):
            raise DataError("the members read different rows from the data")
        probs.append(p)
        references = refs
    if references is None or not len(references):
        raise DataError("nothing to evaluate: the split has no rows left")
    mean = combine_probabilities(probs, predictor.weights)
    loss = float(-np.log(np.clip(mean[np.arange(len(references)), references], 1e-12, None)).mean())
    return mean.argmax(axis=-1).tolist(), references.tolist(), loss, str(name), len(references)
