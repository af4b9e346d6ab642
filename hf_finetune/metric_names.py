"""Names of the metrics shipped with the package (no heavy imports: the recipe checks use this)."""

from __future__ import annotations

import difflib

# Metric name -> the keys it adds to the evaluation results. These are `evaluate` modules shipped in
# hf_finetune/metric_modules so they load without the Hub; classification averages are macro.
BUNDLED_METRICS: dict[str, tuple[str, ...]] = {
    "accuracy": ("accuracy",),
    "precision": ("precision",),
    "recall": ("recall",),
    "f1": ("f1",),
    "matthews_correlation": ("matthews_correlation",),
}


def metric_keys(names: list[str]) -> set[str]:
    """The result keys a list of metric names produces (a Hub metric is assumed to report its own name)."""
    keys: set[str] = set()
    for name in names:
        keys.update(BUNDLED_METRICS.get(name, (name.split("/")[-1],)))
    return keys


def suggest_bundled(name: str) -> str | None:
    """A bundled metric that a name looks like a misspelling of (other names are treated as Hub metrics)."""
    if name in BUNDLED_METRICS:
        return None
    match = difflib.get_close_matches(name.lower(), list(BUNDLED_METRICS), n=1, cutoff=0.75)
    return match[0] if match else None
