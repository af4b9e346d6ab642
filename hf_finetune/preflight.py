"""Pre-flight: everything that can be checked before any weights are loaded or data preprocessed.

`hf-finetune check` runs it and prints what it found; `train` runs it first, so a wrong column,
label, image or model name costs seconds, not a tokenization pass or a weights download.

    model    the name resolves: a local folder with a config, a timm architecture, a Hub id (its
             config is fetched, or found in the cache when offline)
    metrics  every metric loads
    data     splits exist and are not empty; the columns exist and have the right types; labels
             agree across splits and there are at least two; a sample of images decodes; the
             unlabelled pool of self-training is not empty and has the input columns
    hub      with hub.push, whether the Hub answers and a token exists (a warning: training goes ahead)
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict

from hf_finetune import hub
from hf_finetune.data.sources import load_raw_splits
from hf_finetune.data.splits import check_columns, select_splits
from hf_finetune.errors import DataError
from hf_finetune.recipe import Recipe
from hf_finetune.tasks import task_of

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 256  # rows read from a streamed Hub dataset


@dataclass
class PreflightReport:
    model: str = ""
    metrics: str = ""
    splits: dict[str, str] = field(default_factory=dict)
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{'model:':<12}{self.model}", f"{'metrics:':<12}{self.metrics}"]
        out += [f"{role + ':':<12}{text}" for role, text in self.splits.items()]
        if self.labels is not None:
            shown = ", ".join(self.labels[:20]) + (f", ... ({len(self.labels)} in all)" if len(self.labels) > 20 else "")
            out.append(f"{'labels:':<12}{shown}")
        out += [f"{'note:':<12}{note}" for note in self.notes]
        return out


def preflight(recipe: Recipe) -> PreflightReport:
    """Runs every check; the first failure raises a `UserError` naming what to change."""
    report = PreflightReport()
    report.model = check_model(recipe)
    if recipe.finetune.strategy == "lora":
        from hf_finetune.training.lora import check_recipe_lora

        check_recipe_lora(recipe)  # targets and rank against the layers, before any weights load
    report.metrics = check_metrics(recipe.metrics, recipe.task)
    check_data(recipe, report)
    if recipe.data.unlabeled is not None:
        from hf_finetune.data.unlabeled import describe_pool

        report.splits["unlabeled"] = describe_pool(recipe, task_of(recipe).inputs)
    if recipe.hub.push:
        problem = hub.push_readiness(recipe.hub.repo_id)
        if problem:  # a warning, not an error: the run itself does not need the Hub
            logger.warning(problem)
            report.notes.append(problem)
    return report


def check_model(recipe: Recipe) -> str:
    """Resolves the backbone's name and reads its config (never its weights)."""
    return task_of(recipe).inputs.describe_model(recipe.model)


def check_metrics(names: list[str], task: str | None = None) -> str:
    from hf_finetune.metrics import load_metric
    from hf_finetune.metrics.names import BUNDLED_METRICS, SEGMENTATION_METRICS
    from hf_finetune.recipe.schema import REGRESSION_TASKS

    if task in REGRESSION_TASKS:  # computed by metrics/regression.py (the recipe allows no other name)
        return ", ".join(f"{n} (bundled)" for n in names)
    bundled = {**BUNDLED_METRICS, **SEGMENTATION_METRICS}  # segmentation's figures: metrics/segmentation.py
    for name in names:
        if name not in bundled:
            load_metric(name)
    return ", ".join(f"{n} ({'bundled' if n in bundled else 'Hub'})" for n in names)


def _sample_hub(recipe: Recipe, report: PreflightReport) -> DatasetDict:
    """The first rows of each split, streamed, without downloading the dataset."""
    import datasets

    data = recipe.data
    try:
        streamed = datasets.load_dataset(data.dataset, data.config, revision=data.revision, streaming=True)
    except ValueError as exc:
        raise DataError(f"data.config: {exc}") from None
    except (ConnectionError, FileNotFoundError, OSError) as exc:
        raise DataError(f"data.dataset: cannot read '{data.dataset}' from the Hub: {exc}") from None
    out = {}
    for split, stream in streamed.items():
        rows = list(itertools.islice(stream, SAMPLE_ROWS))
        out[split] = Dataset.from_list(rows, features=stream.features) if stream.features else Dataset.from_list(rows)
    report.notes.append(f"read the first {SAMPLE_ROWS} rows of each split (streamed); labels are checked in full "
                        "when training loads the data")
    return DatasetDict(out)


def _load_for_check(recipe: Recipe, report: PreflightReport) -> tuple[DatasetDict, bool]:
    """(splits, complete): local data is loaded whole (cached, so training reuses it); Hub data sampled."""
    data = recipe.data
    if data.streaming:  # the head of each stream: a stream is never loaded whole
        from hf_finetune.data.streaming import load_streams, stream_head

        heads = {split: stream_head(stream, SAMPLE_ROWS, "data", split) for split, stream in load_streams(data).items()}
        report.notes.append(f"streamed: read the first {SAMPLE_ROWS} rows of each split; the label space is read "
                            f"from the first {data.head_rows} training rows (data.head_rows) when training starts")
        return DatasetDict(heads), False
    remote = data.dataset is not None and not hub.is_local_path(data.dataset)
    if remote and hub.unreachable_reason() is None:
        return _sample_hub(recipe, report), False
    return load_raw_splits(data), True


def check_data(recipe: Recipe, report: PreflightReport) -> None:
    data = recipe.data
    raw, complete = _load_for_check(recipe, report)
    splits = select_splits(raw, data)
    check_columns(splits, data)
    names = {role: getattr(data.splits, role) for role in splits}
    for role, ds in splits.items():
        size = f"{len(ds)} rows" if complete else f"{len(ds)}+ rows"
        report.splits[role] = f"split '{names[role]}', {size}"
    if "validation" not in splits:
        report.splits["validation"] = f"carved from split '{names['train']}' (data.validation_size: {data.validation_size})"

    task = task_of(recipe)
    task.inputs.check_columns(splits, recipe, names)
    report.labels = task.problem.labeling.preflight(splits, recipe, names, complete)
    if report.labels is not None:
        from hf_finetune.training.assembly import class_weights_problem

        problem = class_weights_problem(recipe.finetune.class_weights, report.labels)
        if problem:
            raise DataError(f"finetune.class_weights: {problem}")


def check_output_folder(recipe: Recipe) -> None:
    """What `train` would refuse about output.dir as it is now: another program's files, a finished run.

    Checkpoints of an unfinished run are left alone: `train --resume` continues them. A search recipe's
    folder is tune's, with its own rules.

    Raises:
        OutputExistsError: naming output.dir and what to do.
    """
    from hf_finetune.errors import OutputExistsError
    from hf_finetune.outputs import output_dir_refusal

    if "search" in recipe.model_fields_set:
        return
    refusal = output_dir_refusal(recipe.output.dir, recipe.output.overwrite, resume=True)
    if refusal:
        raise OutputExistsError(refusal)


def format_report(report: PreflightReport) -> str:
    return "\n".join(f"#   {line}" for line in report.lines()) + "\n"

