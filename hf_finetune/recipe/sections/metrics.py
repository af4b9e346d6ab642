"""`metrics`: the `evaluate` metrics a run reports, and the names of those shipped with the package.

The bundled metric modules live in hf_finetune/metrics/modules; their names and result keys live here,
so the recipe checks them without importing the metrics stage (which re-exports them).
"""

from __future__ import annotations

from hf_finetune.errors import Problem, closest

# Metric name -> the keys it adds to the evaluation results. These are `evaluate` modules shipped in
# hf_finetune/metrics/modules so they load without the Hub; classification averages are macro.
BUNDLED_METRICS: dict[str, tuple[str, ...]] = {
    "accuracy": ("accuracy",),
    "precision": ("precision",),
    "recall": ("recall",),
    "f1": ("f1",),
    "matthews_correlation": ("matthews_correlation",),
}


# token-classification: entity-level precision, recall and F1 as seqeval computes them (micro over entity
# types; the macro average beside it), and token accuracy. No other metric applies to tags.
ENTITY_METRICS: dict[str, tuple[str, ...]] = {
    "f1": ("f1", "macro_f1"),
    "precision": ("precision", "macro_precision"),
    "recall": ("recall", "macro_recall"),
    "accuracy": ("accuracy",),
}


# text-regression, image-regression: computed here (metrics/regression.py), averaged over the targets (each
# target's figures are in the report's per_target table). Selection is on pearson: scale-free and what
# human-rating benchmarks (STS-B, VADER) report; rmse and mae are lower-is-better.
REGRESSION_METRICS: dict[str, tuple[str, ...]] = {
    "pearson": ("pearson",),
    "spearman": ("spearman",),
    "rmse": ("rmse",),
    "mae": ("mae",),
    "r2": ("r2",),
}
LOWER_IS_BETTER = frozenset({"rmse", "mae", "loss", "hamming_loss"})  # selection and search directions

# semantic-segmentation: every run reports mean IoU (the default selection metric), pixel accuracy and mean Dice,
# with per-class IoU beside them (metrics/segmentation.py); `metrics` may list only these (all three by default),
# the first being the selection metric.
SEGMENTATION_METRICS: dict[str, tuple[str, ...]] = {
    "mean_iou": ("mean_iou",),
    "pixel_accuracy": ("pixel_accuracy",),
    "mean_dice": ("mean_dice",),
}

# text-multi-label, image-multi-label: figures over label sets at tuned thresholds (metrics/multi_label.py), all
# of them reported whatever the list names; these names may be listed. f1 (macro) selects the model.
MULTI_LABEL_METRICS: dict[str, tuple[str, ...]] = {
    "f1": ("f1", "micro_f1", "samples_f1", "f1_untuned"),
    "precision": ("precision", "micro_precision"),
    "recall": ("recall", "micro_recall"),
    "accuracy": ("accuracy",),  # subset accuracy: the whole label set right
    "hamming_loss": ("hamming_loss",),
    "average_precision": ("average_precision",),
}
MULTI_LABEL_KEYS = frozenset(k for keys in MULTI_LABEL_METRICS.values() for k in keys)


def metric_keys(names: list[str], entities: bool = False, task: str | None = None) -> set[str]:
    """The result keys a list of metric names produces (a Hub metric is assumed to report its own name);
    `entities`: the names as token-classification reads them (ENTITY_METRICS); the multi-label and
    segmentation tasks produce every figure of their own whatever the list names; the regression tasks read
    the names as REGRESSION_METRICS. (Task names as literals: this section imports nothing of the schema.)"""
    if task in ("text-multi-label", "image-multi-label"):
        return set(MULTI_LABEL_KEYS)
    if task == "semantic-segmentation":
        return {key for keys in SEGMENTATION_METRICS.values() for key in keys}
    table = (ENTITY_METRICS if entities else REGRESSION_METRICS if task in ("text-regression", "image-regression")
             else BUNDLED_METRICS)
    keys: set[str] = set()
    for name in names:
        keys.update(table.get(name, (name.split("/")[-1],)))
    return keys


def suggest_bundled(name: str) -> str | None:
    """A bundled metric that a name looks like a misspelling of (other names are treated as Hub metrics)."""
    if name in BUNDLED_METRICS:
        return None
    # Stricter than recipe keys, and no prefix matches: an unknown name is a Hub metric, not a typo.
    return closest(name.lower(), BUNDLED_METRICS, prefixes=False, cutoff=0.75)


def metrics_problems(metrics: list[str]) -> list[Problem]:
    """At least one metric; a name close to a bundled one is taken for a misspelling of it."""
    problems = []
    if not metrics:
        problems.append(Problem("metrics", "give at least one metric (e.g. [accuracy])"))
    for i, name in enumerate(metrics):
        near = suggest_bundled(name)
        if near:
            problems.append(Problem(f"metrics[{i}]", f"unknown metric '{name}'; did you mean '{near}'?"))
    return problems
