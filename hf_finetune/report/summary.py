"""The one line printed at the end of a run: time, the figures that matter, throughput, where the outputs are."""

from __future__ import annotations

import os
from typing import Any

SCALAR_SKIP = {"loss", "num_samples", "words", "predicted_outside", "true_outside"}  # report keys that are not
# quality metrics


def format_duration(seconds: float) -> str:
    """`42s`, `1m12s`, `2h03m`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def metric_names(results: dict[str, Any]) -> list[str]:
    """The scalar quality metrics of a run's reports, in the recipe's order (loss left out)."""
    for split in ("validation", "test"):
        report = results.get(split)
        if report:
            return [k for k, v in report.items() if k not in SCALAR_SKIP and isinstance(v, (int, float))]
    return []


def summary_line(results: dict[str, Any], wall_time_s: float, out_dir: str | os.PathLike) -> str:
    """`Done in 1m12s | validation accuracy 0.912 f1 0.905 | test ... | 412 samples/s | outputs/x`."""
    parts = [f"Done in {format_duration(wall_time_s)}"]
    shown = metric_names(results)[:4]  # one line at a glance
    for split in ("validation", "test"):
        if split in results:
            figures = " ".join(f"{k} {results[split][k]:.3f}" for k in shown if k in results[split])
            parts.append(f"{split} {figures}")
    last = next((results[s] for s in ("test", "validation") if s in results), {})
    baseline = last.get("majority_baseline")
    if baseline:  # what always predicting the largest class would score, for scale
        figures = " ".join(f"{k} {baseline[k]:.3f}" for k in ("accuracy", "f1", "rmse", "r2", "mean_iou")
                           if k in baseline)
        parts.append(f"{baseline.get('name', 'majority-class')} baseline {figures}")
    speed = results.get("train", {}).get("samples_per_second")
    if speed:
        parts.append(f"{speed:,.0f} samples/s" if speed >= 10 else f"{speed:.1f} samples/s")
    parts.append(str(out_dir))
    return " | ".join(parts)
