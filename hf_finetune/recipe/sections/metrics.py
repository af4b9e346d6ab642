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
    `entities`: the names as token-classification reads them (ENTITY_METRICS); a multi-label `task`
    produces every multi-label figure."""
    if task in ("text-multi-label", "image-multi-label"):
        return set(MULTI_LABEL_KEYS)
    keys: set[str] = set()
    for name in names:
        keys.update((ENTITY_METRICS if entities else BUNDLED_METRICS).get(name, (name.split("/")[-1],)))
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
