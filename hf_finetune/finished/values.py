"""Values predicted by a finished regression model: one number per target, in the targets' original units.

    predict_values    one {target: value} mapping per input (the saved head outputs original units:
                      tasks/regression.py folds the training scale into it)
    format_values     `rating 2.314  the film was...`
    write_values      JSONL (input, then each target) or CSV (input, then a column per target)
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

from hf_finetune.outputs import prediction_file


def predict_values(predictor: Any, items: list[Any], batch_size: int = 32, top_k: int = 1) -> list[dict[str, float]]:
    """{target: value} per item, in order (`top_k` means nothing to values)."""
    import torch

    from hf_finetune.predictor import model_logits

    out: list[dict[str, float]] = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        with torch.inference_mode():
            values = model_logits(predictor, batch).float().reshape(len(batch), -1)
        out += [dict(zip(predictor.labels, map(float, row), strict=True)) for row in values.tolist()]
    return out


def format_values(item: Any, values: dict[str, float], width: int = 100) -> str:
    """`rating 2.314  the film was...`: the values first, then the input, shortened to one line."""
    shown = " ".join(str(item.value).split())
    if item.pair is not None:
        shown += " || " + " ".join(item.pair.split())
    if len(shown) > width:
        shown = shown[: width - 1] + "…"
    return ", ".join(f"{name} {value:.4g}" for name, value in values.items()) + "  " + shown


def write_values(path: str | os.PathLike, items: list[Any], predictions: list[dict[str, float]]) -> None:
    """One record per input: JSONL {input, [input_pair], target: value...} or CSV with a column per target.

    Raises:
        UserError: the file name ends in neither .jsonl nor .csv.
    """
    path = prediction_file(path)
    suffix = path.suffix.lower()
    has_pair = any(item.pair is not None for item in items)
    rows = []
    for item, values in zip(items, predictions, strict=True):
        row: dict[str, Any] = {"input": item.value}
        if has_pair:
            row["input_pair"] = item.pair
        row.update(values)
        rows.append(row)
    if suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["input"])
        writer.writeheader()
        writer.writerows(rows)
