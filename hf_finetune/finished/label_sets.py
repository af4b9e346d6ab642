"""Label sets predicted by a finished multi-label model: every label's sigmoid score, and the labels over
their thresholds (tuned on validation, stored in config.json: tasks/multi_label.py).

    predict_label_sets    one record per input: {labels: [...], scores: {label: score}} (scores best first)
    format_label_sets     `joy, trust  (joy 0.912, trust 0.641, fear 0.102)  a wonderful day`
    write_label_sets      JSONL (one record per input) or CSV (input, labels joined by '|', a score column per label)
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

from hf_finetune.outputs import prediction_file
from hf_finetune.tasks.multi_label import stored_thresholds

SHOWN_SCORES = 3  # scores shown per line on the terminal (files hold every label's)


def predict_label_sets(predictor: Any, items: list[Any], batch_size: int = 32, top_k: int = 1) -> list[dict]:
    """Every label's score per input and the labels at or over their thresholds (`top_k`: scores shown)."""
    import torch

    thresholds = stored_thresholds(predictor.model.config, predictor.labels)["per_label"]
    out = []
    for start in range(0, len(items), batch_size):
        with torch.inference_mode():
            probs = predictor.probabilities(items[start:start + batch_size])
        for row in probs.tolist():
            ranked = sorted(zip(predictor.labels, row, strict=True), key=lambda pair: -pair[1])
            out.append({"labels": [label for label, score in ranked if score >= thresholds[label]],
                        "scores": dict(ranked)})
    return out


def format_label_sets(item: Any, record: dict, width: int = 100) -> str:
    shown = " ".join(str(item.value).split())
    if item.pair is not None:
        shown += " || " + " ".join(item.pair.split())
    if len(shown) > width:
        shown = shown[: width - 1] + "…"
    top = ", ".join(f"{label} {score:.3f}" for label, score in list(record["scores"].items())[:SHOWN_SCORES])
    return f"{', '.join(record['labels']) or '(no label)'}  ({top})  {shown}"


def write_label_sets(path: str | os.PathLike, items: list[Any], records: list[dict]) -> None:
    """JSONL: {input, labels, scores}; CSV: input, labels (joined by '|'), then one score column per label."""
    path = prediction_file(path)
    suffix = path.suffix.lower()
    has_pair = any(item.pair is not None for item in items)
    if suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for item, record in zip(items, records, strict=True):
                row: dict[str, Any] = {"input": item.value}
                if has_pair:
                    row["input_pair"] = item.pair
                f.write(json.dumps({**row, **record}, ensure_ascii=False) + "\n")
        return
    names = sorted(records[0]["scores"]) if records else []
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["input"] + (["input_pair"] if has_pair else []) + ["labels"] + names)
        for item, record in zip(items, records, strict=True):
            writer.writerow([item.value] + ([item.pair] if has_pair else []) + ["|".join(record["labels"])]
                            + [record["scores"][n] for n in names])
