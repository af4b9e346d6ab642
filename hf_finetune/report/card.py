"""The model card (README.md) and the files it links, written into the run's staging folder.

    write_report        training_log.json, the plots (report.plots) and README.md
    render_card         the model card from plain records (resolved recipe, metrics.json, run.json)

The card is rendered only from what the output folder itself records, so `hf-finetune push` can
render it again for another repository id and tell whether the user has edited it since.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hf_finetune.files import write_json, write_text
from hf_finetune.report.plots import (
    LOSS_PLOT,
    METRIC_NAMES,
    METRICS_PLOT,
    confusion_plot_name,
    plot_confusion_matrix,
    plot_loss,
    plot_validation_metrics,
)
from hf_finetune.report.regression_plots import regression_drawings, regression_plot_name
from hf_finetune.report.self_training import self_training_section
from hf_finetune.report.summary import metric_names
from hf_finetune.tasks import get_task

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
LOG_FILE = "training_log.json"
MAX_TABLE_CLASSES = 20  # larger confusion matrices are shown as an image only


# --- what goes into the output folder --------------------------------------------------------------

def write_report(folder: str | os.PathLike, recipe: dict[str, Any], results: dict[str, Any],
                 manifest: dict[str, Any], log_history: list[dict[str, Any]]) -> list[str]:
    """Writes the training log, the plots and the model card into `folder`.

    A plot that cannot be drawn is logged and left out (the card then does not link it), and so is
    a card that cannot be rendered: after a long training run, a report problem must not cost the model.

    Args:
        folder: where to write (the run's staging folder).
        recipe: the resolved recipe, as `Recipe.to_dict()` gives it.
        results: the run's metrics (`metrics.json`: validation, test, train).
        manifest: the run's record (`run.json` without the file list).
        log_history: the Trainer's `state.log_history`.

    Returns:
        The names of the files written.
    """
    folder = Path(folder)
    write_json(folder / LOG_FILE, log_history)
    written = [LOG_FILE]
    selected = _selected_metric(recipe)
    titles = _words(recipe).metric_titles
    drawings = [(LOSS_PLOT, lambda p: plot_loss(log_history, p)),
                (METRICS_PLOT, lambda p: plot_validation_metrics(log_history, metric_names(results), selected, p,
                                                                 titles))]
    for split in ("validation", "test"):
        if split in results:
            drawings.append((confusion_plot_name(split),
                             lambda p, s=split: plot_confusion_matrix(results[s], p, f"Confusion matrix ({s})")))
    drawings += regression_drawings(results)  # regression reports: predicted vs true, residuals
    for name, draw in drawings:
        try:
            if draw(folder / name):
                written.append(name)
        except Exception:  # matplotlib errors come in many types; the run is finished either way
            logger.warning("Could not draw %s; the model card goes without it", name, exc_info=True)
    try:
        card = render_card(recipe, results, manifest, plots=[n for n in written if n.endswith(".png")],
                           model_id=default_model_id(recipe))
    except Exception:  # as for the plots: the trained model and its metrics matter more than the card
        logger.error("Could not write the model card (%s); the run goes on without it", CARD_FILE, exc_info=True)
        return written
    write_text(folder / CARD_FILE, card)
    written.append(CARD_FILE)
    return written


# Per-class figures, as the card titles them (classes and entity types: precision, recall, F1; pixels: IoU, Dice)
def default_model_id(recipe: dict[str, Any]) -> str:
    """What the card's code loads: the Hub repository when the recipe names one, else the output folder."""
    return recipe.get("hub", {}).get("repo_id") or str(recipe["output"]["dir"])


# --- model card --------------------------------------------------------------------------------------

def _words(recipe: dict[str, Any]) -> Any:
    """How the card speaks of the task's labels, metrics and baseline (tasks/: Problem.card)."""
    return get_task(recipe["task"]).problem.card


def _title(recipe: dict[str, Any], name: str) -> str:
    return _words(recipe).metric_titles.get(name, METRIC_NAMES.get(name, name))


def _selected_metric(recipe: dict[str, Any]) -> str | None:
    metric = (recipe.get("training") or {}).get("metric_for_best_model")
    return metric.removeprefix("eval_") if metric else None


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _data_description(recipe: dict[str, Any], ids: dict[str, Any]) -> str:
    data = recipe["data"]
    if data.get("dataset"):
        name = ids.get("dataset") or data["dataset"]
        text = f"[{name}](https://huggingface.co/datasets/{name})" if ids.get("dataset") else f"`{name}`"
        if data.get("config"):
            text += f" (configuration `{data['config']}`)"
        return text
    if data.get("image_folder"):
        return f"the image folder `{data['image_folder']}`"
    files = data.get("files") or {}
    listed = "; ".join(f"{split}: " + ", ".join(f"`{Path(p).name}`" for p in paths) for split, paths in files.items())
    return f"local files ({listed})"


def _dataset_type(recipe: dict[str, Any], ids: dict[str, Any]) -> str:
    if ids.get("dataset"):
        return ids["dataset"]
    data = recipe["data"]
    if data.get("image_folder"):
        return "imagefolder"
    if data.get("files"):
        from hf_finetune.recipe import FILE_FORMATS

        first = next(iter(data["files"].values()))[0]
        return FILE_FORMATS.get(Path(first).suffix.lower(), "local")
    return "local"


def _dataset_name(recipe: dict[str, Any], ids: dict[str, Any]) -> str:
    data = recipe["data"]
    if ids.get("dataset") or data.get("dataset"):
        return str(ids.get("dataset") or Path(data["dataset"]).name)
    if data.get("image_folder"):
        return Path(data["image_folder"]).name
    first = next(iter((data.get("files") or {"x": ["local"]}).values()))[0]
    return Path(first).parent.name or Path(first).stem


def split_name(recipe: dict[str, Any], manifest: dict[str, Any], role: str) -> str:
    """The dataset split behind a role: its name in the data, or how validation was carved."""
    source = manifest.get("splits", {}).get(role, {}).get("source", "")
    name = (recipe["data"].get("splits") or {}).get(role) or role
    if "carved" in source:
        return f"{recipe['data']['splits']['train']} (carved out for validation)"
    return name


def _eval_results(recipe: dict[str, Any], results: dict[str, Any], manifest: dict[str, Any]) -> list[Any]:
    from huggingface_hub import EvalResult

    ids = manifest.get("hub_ids") or {}
    out = []
    for role in ("validation", "test"):
        report = results.get(role)
        if not report:
            continue
        for name in metric_names(results):
            if name not in report:
                continue
            out.append(EvalResult(
                task_type=get_task(recipe["task"]).pipeline_task,  # the Hub's task (multi-label: text-classification)
                task_name=get_task(recipe["task"]).card_name,
                dataset_type=_dataset_type(recipe, ids),
                dataset_name=_dataset_name(recipe, ids),
                dataset_config=recipe["data"].get("config"),
                dataset_split=split_name(recipe, manifest, role),
                metric_type=name,
                metric_name=f"{_title(recipe, name)}, {role}",
                metric_value=report[name],
                metric_args={"average": average} if (average := _words(recipe).averages.get(name)) else None,
            ))
    return out


def card_metadata(recipe: dict[str, Any], results: dict[str, Any], manifest: dict[str, Any],
                  model_name: str) -> Any:
    """Hub model-card metadata: base model, datasets, task, license, metrics in `model-index` form."""
    from huggingface_hub import ModelCardData

    ids = manifest.get("hub_ids") or {}
    tags = ["hf-finetune", recipe["task"], *get_task(recipe["task"]).inputs.libraries]
    return ModelCardData(
        model_name=model_name,
        base_model=ids.get("base_model"),
        datasets=[ids["dataset"]] if ids.get("dataset") else None,
        license=(recipe.get("card") or {}).get("license"),
        library_name="transformers",
        pipeline_tag=get_task(recipe["task"]).pipeline_task,  # what pipeline() calls it (regression: text-classification)
        tags=tags,
        metrics=list(recipe.get("metrics") or []),
        eval_results=_eval_results(recipe, results, manifest) or None,
    )


def render_card(recipe: dict[str, Any], results: dict[str, Any], manifest: dict[str, Any], plots: list[str],
                model_id: str) -> str:
    """The model card (README.md): Hub metadata, then what was trained on what, how, and how well.

    Args:
        recipe: the resolved recipe (`recipe.yaml`).
        results: `metrics.json`.
        manifest: `run.json` (its `files` are not needed).
        plots: the PNG files in the folder, linked when present.
        model_id: what the usage example loads: a Hub repository id or a local folder.
    """
    model_name = model_id.rstrip("/").split("/")[-1]
    metadata = card_metadata(recipe, results, manifest, model_name)
    sections = [
        f"# {model_name}",
        _intro(recipe, manifest),
        _results_section(recipe, results, plots),
        self_training_section(results),
        _usage_section(recipe, model_id),
        _data_section(recipe, manifest),
        _procedure_section(recipe, results, manifest, plots),
        _versions_section(manifest),
    ]
    return f"---\n{metadata.to_yaml()}\n---\n\n" + "\n\n".join(s for s in sections if s) + "\n"


def _labels_text(labels: list[str]) -> str:
    shown = ", ".join(f"`{label}`" for label in labels[:20])
    return shown + (f", ... ({len(labels)} in all)" if len(labels) > 20 else "")


def _intro(recipe: dict[str, Any], manifest: dict[str, Any]) -> str:
    ids = manifest.get("hub_ids") or {}
    base = ids.get("base_model")
    name = recipe["model"]["name"]
    if not recipe["model"].get("pretrained", True):
        origin = f"the architecture of `{name}`, trained from random weights,"
    elif base:
        origin = f"a fine-tuned version of [{base}](https://huggingface.co/{base})"
        if base != name:
            origin += f" (loaded from `{name}`)"
    else:
        origin = f"a fine-tuned version of `{name}`"
    labels = manifest.get("labels") or []
    task = get_task(recipe["task"])
    what = task.problem.card.labels.format(kind=task.inputs.kind, n=len(labels), labels=_labels_text(labels))
    return (
        f"This model is {origin} for {task.card_name.lower()}, trained on "
        f"{_data_description(recipe, ids)} with hf-finetune. {what}"
    )


def _results_section(recipe: dict[str, Any], results: dict[str, Any], plots: list[str]) -> str:
    roles = [r for r in ("validation", "test") if results.get(r)]
    if not roles:
        return ""
    words = _words(recipe)
    rows = [[_title(recipe, n)] + [results[r].get(n, "") for r in roles] for n in metric_names(results)]
    rows.append(["Loss"] + [results[r].get("loss", "") for r in roles])
    rows.append(["Samples"] + [results[r].get("num_samples", "") for r in roles])
    parts = ["## Results", _table(["metric"] + roles, rows)]
    baselines = {r: results[r].get("majority_baseline") for r in roles if results[r].get("majority_baseline")}
    if baselines:
        names = [n for n in metric_names(results) if any(n in b for b in baselines.values())]
        majority = next(iter(baselines.values()))["class"]
        parts.append(f"For scale, {words.baseline.format(name=majority)} would score:")
        parts.append(_table(["metric"] + list(baselines),
                            [[_title(recipe, n)] + [b.get(n, "") for b in baselines.values()] for n in names]))
    for warning in results.get("warnings") or []:
        parts.append(f"**Warning:** {warning}")
    for figure in results.get("figures") or []:  # the task's pictures of predictions (segmentation: masks)
        parts.append(f"![{figure}]({figure})")
    train = results.get("train") or {}
    selected = _selected_metric(recipe)
    if train.get("best_metric") is not None and selected:
        step = str(train.get("best_checkpoint") or "").rsplit("-", 1)[-1]
        where = f" (step {step})" if step.isdigit() else ""
        parts.append(f"The weights are the best checkpoint by validation `{selected}`: "
                     f"{_fmt(train['best_metric'])}{where}.")
    for role in roles:
        report = results[role]
        per_class = report.get("per_class") or report.get("per_target") or {}
        fields = words.per_class_fields
        parts.append(f"### {words.per_class} ({role})")
        parts.append(_table([words.per_class_column] + [_column_title(recipe, f) for f in fields],
                            [[label] + [v.get(f, "") for f in fields] for label, v in per_class.items()]))
        parts.append(_confusion_section(report, role, plots))
        if regression_plot_name(role) in plots:
            parts.append(f"![Predicted vs true, residuals ({role})]({regression_plot_name(role)})")
    return "\n\n".join(part for part in parts if part)


def _column_title(recipe: dict[str, Any], field: str) -> str:
    """A per-label table's column: the classification columns as they were, other fields by their title."""
    return {"precision": "precision", "recall": "recall", "f1": "F1", "support": "support", "iou": "IoU",
            "dice": "Dice"}.get(
        field, _words(recipe).metric_titles.get(field, field))


def _confusion_section(report: dict[str, Any], role: str, plots: list[str]) -> str:
    cm = report.get("confusion_matrix")
    if not cm:
        return ""
    parts = [f"#### Confusion matrix ({role})"]
    if confusion_plot_name(role) in plots:
        parts.append(f"![Confusion matrix ({role})]({confusion_plot_name(role)})")
    labels, matrix = cm["labels"], cm["matrix"]
    if len(labels) <= MAX_TABLE_CLASSES:
        header = ["true \\ predicted"] + [str(label) for label in labels]
        parts.append(_table(header, [[label, *row] for label, row in zip(labels, matrix, strict=True)]))
    else:
        parts.append(f"({len(labels)} classes: the counts are in `metrics.json`.)")
    return "\n\n".join(parts)


def _usage_section(recipe: dict[str, Any], model_id: str) -> str:
    task = get_task(recipe["task"])
    code = task.problem.card.usage.format(task=task.pipeline_task, model=model_id, example=task.example_input)
    parts = ["## How to use", f"```python\n{code}\n```"]
    if "timm" in task.inputs.libraries and task.inputs.kind == "image":  # a TimmWrapper folder (not UperNet's)
        local = model_id == str(recipe["output"]["dir"])
        name = f"local-dir:{model_id}" if local else f"hf-hub:{model_id}"
        parts.append(f"The files keep timm's layout too: `timm.create_model(\"{name}\", pretrained=True)` "
                     "loads the same network.")
    parts.append("From a local copy, `hf-finetune predict FOLDER INPUTS...` labels texts, files or images in "
                 "batches, and `hf-finetune evaluate FOLDER --data FILE` scores it on new labelled data.")
    return "\n\n".join(parts)


def _data_section(recipe: dict[str, Any], manifest: dict[str, Any]) -> str:
    splits = manifest.get("splits") or {}
    rows = [[role, info.get("source", ""), info.get("rows", "")] for role, info in splits.items()]
    cols = recipe["data"].get("columns") or {}
    inputs = ", ".join(f"{k} `{v}`" for k, v in cols.items() if v)
    parts = ["## Training data", _table(["role", "source", "rows"], rows), f"Columns: {inputs}."]
    labeling = manifest.get("labeling") or {}
    if labeling.get("tag_scheme"):
        parts.append(f"Tags were read as {labeling['tag_scheme']}" + (" and converted to IOB2" if labeling[
            "tag_scheme"] != "IOB2" else "") + ".")
    for role, found in (labeling.get("malformed") or {}).items():
        parts.append(f"Malformed tag sequences in {role}: {found['tags']} tags in {found['sentences']} sentences (an "
                     "I- tag that continues no entity), read as the start of an entity, as seqeval reads them.")
    skipped = manifest.get("skipped_images") or {}
    if any(skipped.values()):
        parts.append("Unreadable images left out: " + ", ".join(f"{r} {len(v)}" for r, v in skipped.items()) + ".")
    return "\n\n".join(parts)


def _procedure_section(recipe: dict[str, Any], results: dict[str, Any], manifest: dict[str, Any],
                       plots: list[str]) -> str:
    labels = manifest.get("labels") or []
    head = _words(recipe).head.format(n=len(labels))
    strategy = _strategy_text(recipe.get("finetune") or {}, results.get("train") or {}, len(labels), head)
    if (recipe.get("model") or {}).get("pooling") == "mean":
        strategy += (" The classifier reads the mean of the token states, as the backbone was trained to be read: "
                     "hf-finetune appends one frozen BERT layer that computes it (models/pooling.py), so this "
                     "is an ordinary BertForSequenceClassification with one more layer, loaded without remote code.")
    hp = dict(manifest.get("training") or {})
    prep = manifest.get("preprocessing") or {}
    if "max_length" in prep:
        hp["max_length (tokens)"] = prep["max_length"]
    image = prep.get("image") or {}
    for key in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std"):
        if key in image:
            hp[f"image {key}"] = image[key]
    if "augmentation" in get_task(recipe["task"]).inputs.sections:
        for key, value in (recipe.get("augmentation") or {}).items():
            hp[f"augmentation {key}"] = value
    train = results.get("train") or {}
    outcome = {"optimizer steps": train.get("steps"), "epochs": train.get("epochs"),
               "training loss": train.get("loss"), "training time (s)": train.get("runtime_s"),
               "samples per second": train.get("samples_per_second")}
    if train.get("resumed_from"):
        outcome["resumed from"] = Path(str(train["resumed_from"])).name
    parts = ["## Training procedure", strategy,
             _table(["hyperparameter", "value"], [[f"`{k}`", _value(v)] for k, v in hp.items() if v is not None]),
             _table(["outcome", "value"], [[k, _value(v)] for k, v in outcome.items() if v is not None])]
    curves = [(LOSS_PLOT, "Training and validation loss"), (METRICS_PLOT, "Validation metrics by epoch")]
    parts += [f"![{title}]({name})" for name, title in curves if name in plots]
    parts.append("The resolved recipe is `recipe.yaml` (every default filled in); "
                 "`hf-finetune train recipe.yaml` repeats the run where its data paths exist. "
                 "`training_log.json` holds every logged loss and evaluation.")
    return "\n\n".join(parts)


def _strategy_text(ft: dict[str, Any], train: dict[str, Any], num_labels: int, head: str | None = None) -> str:
    """What trained when, at which learning rates, with which loss: in words, for the card."""
    head = head or f"a new {num_labels}-way classification head (randomly initialised)"
    name = ft.get("strategy", "full")
    if name == "linear_probe":
        how = "once per sample, on features cached in one pass" if ft.get("cache_features") else ""
        text = f"Linear probe: the backbone stays frozen (bit-identical to the base model); only {head} trains"
        text += f", {how}." if how else "."
    elif name == "gradual_unfreeze":
        unit = ft.get("unfreeze_unit", "epoch")
        text = (f"Gradual unfreezing: {head} trains first, then backbone blocks from the top down, "
                f"{ft.get('blocks_per_unfreeze', 1)} more every {_fmt(ft.get('unfreeze_every', 1))} {unit}(s).")
    elif name == "probe_then_full":
        text = (f"LP-FT: a linear probe of {head} for {_fmt(ft.get('probe_epochs', 1))} epoch(s), then every weight "
                "of the backbone trains from the probed head.")
    elif name == "lora":
        lora, settings = train.get("lora") or {}, ft.get("lora") or {}
        share = f" ({lora['trainable_params']:,} of {lora['total_params']:,} parameters, " \
                f"{lora['trainable_share']:.2%})" if lora else ""
        text = (f"LoRA (peft): rank-{settings.get('r', '?')} adapters (alpha {settings.get('alpha', '?'):g}, "
                f"dropout {settings.get('dropout', '?'):g}) on {', '.join(settings.get('target_modules') or [])} "
                f"of the frozen backbone, and {head} in full, train{share}; the adapters are merged into the "
                "weights of this model.")
    else:
        text = f"Full fine-tuning: every weight of the backbone trains, under {head}."
    phases = [p for p in train.get("phases") or [] if "trainable_params" in p]
    if len(phases) > 1:
        text += " Phases: " + "; ".join(
            f"from step {p['step']}, {p['training']} ({p['trainable_params']:,} parameters)" for p in phases) + "."
    rates = []
    if ft.get("head_learning_rate"):
        rates.append(f"head learning rate {_fmt(ft['head_learning_rate'])}")
    if ft.get("backbone_lr_scale", 1.0) != 1.0:
        rates.append(f"backbone at {_fmt(ft['backbone_lr_scale'])} x the learning rate")
    if ft.get("layer_decay"):
        rates.append(f"layer-wise decay {_fmt(ft['layer_decay'])} per block below the head")
    if rates:
        text += " Learning rates: " + ", ".join(rates) + "."
    if train.get("class_weights"):
        text += " Class-weighted loss: " + ", ".join(f"{k} {v:.3g}" for k, v in train["class_weights"].items()) + "."
    if ft.get("early_stopping_patience"):
        stopped = "it stopped early" if train.get("stopped_early") else "it ran to the end"
        text += (f" Early stopping after {ft['early_stopping_patience']} evaluations without improvement "
                 f"({stopped}).")
    return text


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) if not isinstance(v, float) else f"{v:g}" for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return _fmt(value)


def _versions_section(manifest: dict[str, Any]) -> str:
    versions = manifest.get("versions") or {}
    if not versions:
        return ""
    return "## Framework versions\n\n" + "\n".join(f"- {k} {v}" for k, v in versions.items())
