"""Entities in texts, found by a finished token-classification model: text, type, score, character offsets.

    predict_entities    one list of entities per text: {text, type, score, start, end}
    format_entities     `PER 'Clara' (0.981) 11:16; LOC 'Berkeley' (0.967) 31:39  My name is Clara...`
    write_entities      JSONL (one record per text) or CSV (one row per entity)

A text is split into words as the saved tokenizer splits it (as `pipeline()` does), each word is
tagged by its first sub-token (as the model was trained), and consecutive words of one entity are
joined (B- starts an entity, I- of its type continues it): the entity's score is the mean
probability of its words' tags. A text longer than the run's max_length is read in windows that
overlap by the run's stride; each word is tagged from the window where it has the most context.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from hf_finetune.errors import UserError
from hf_finetune.tasks.tags import spans


def _stride(predictor: Any) -> int:
    stride = (predictor.recipe.get("preprocessing") or {}).get("stride")
    return int(stride) if stride is not None else max(0, (predictor.max_length or 512) // 4)


def _word_tags(predictor: Any, texts: list[str]) -> list[list[tuple[int, int, int, float]]]:
    """Per text, per word in order: (start char, end char, tag id, probability)."""
    import torch

    tokenizer = predictor.tokenizer
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    stride = min(_stride(predictor), max(0, (predictor.max_length - specials) // 2 - 1))
    encoded = tokenizer(texts, truncation=True, max_length=predictor.max_length, stride=stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True, padding=True,
                        return_tensors="pt")
    inputs = {n: encoded[n] for n in tokenizer.model_input_names if n in encoded}  # no offsets: the model's own
    with torch.inference_mode():
        logits = predictor.model(**inputs).logits.float()
    probs = torch.softmax(logits, dim=-1)
    best, ids = probs.max(dim=-1)
    sample_of = encoded["overflow_to_sample_mapping"].tolist()
    offsets = encoded["offset_mapping"].tolist()
    # word -> [start, end, (centrality, tag, probability) of its first sub-token in the best window]
    words: list[dict[int, list]] = [{} for _ in texts]
    for window, sample in enumerate(sample_of):
        word_ids = encoded.word_ids(window)
        content = [p for p, w in enumerate(word_ids) if w is not None]
        if not content:
            continue
        first, last = content[0], content[-1]
        for p in content:
            start, end = offsets[window][p]
            entry = words[sample].setdefault(word_ids[p], [start, end, None, None])
            entry[0], entry[1] = min(entry[0], start), max(entry[1], end)
            centre = min(p - first, last - p)
            # the word's first sub-token (its smallest start); among windows, the most central one
            candidate = (start, -centre, int(ids[window, p]), float(best[window, p]))
            if entry[2] is None or candidate[:2] < entry[2][:2]:
                entry[2] = candidate
    return [[(e[0], e[1], e[2][2], e[2][3]) for _, e in sorted(sample.items())] for sample in words]


def predict_entities(predictor: Any, items: list[Any], batch_size: int = 32, top_k: int = 1) -> list[list[dict]]:
    """The entities of each item's text, in order of appearance.

    Raises:
        UserError: top_k above 1 (an entity has one type).
    """
    if top_k != 1:
        raise UserError("--top-k: a token-classification model gives each entity one type; leave --top-k out")
    out: list[list[dict]] = []
    for begin in range(0, len(items), batch_size):
        batch = [str(item.value) for item in items[begin:begin + batch_size]]
        for text, tagged in zip(batch, _word_tags(predictor, batch), strict=True):
            tags = [predictor.labels[tag] for _, _, tag, _ in tagged]
            entities = []
            for kind, first, last in spans(tags):
                start, end = tagged[first][0], tagged[last - 1][1]
                score = sum(p for _, _, _, p in tagged[first:last]) / (last - first)
                entities.append({"text": text[start:end], "type": kind, "score": score, "start": start, "end": end})
            out.append(entities)
    return out


def format_entities(item: Any, entities: list[dict], width: int = 100) -> str:
    """The entities first, then the text, shortened to one line."""
    shown = " ".join(str(item.value).split())
    if len(shown) > width:
        shown = shown[: width - 1] + "…"
    found = "; ".join(f"{e['type']} {e['text']!r} ({e['score']:.3f}) {e['start']}:{e['end']}" for e in entities)
    return (found or "(no entity)") + "  " + shown


def write_entities(path: str | os.PathLike, items: list[Any], predictions: list[list[dict]]) -> None:
    """JSONL: {input, entities: [{text, type, score, start, end}]} per text; CSV: a row per entity.

    Raises:
        UserError: the file name ends in neither .jsonl nor .csv, or it cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise UserError(f"--output: {path}: write .jsonl or .csv")
    if path.is_dir():
        raise UserError(f"--output: {path} is a folder; name a .jsonl or .csv file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            if suffix == ".jsonl":
                for item, entities in zip(items, predictions, strict=True):
                    f.write(json.dumps({"input": item.value, "entities": entities}, ensure_ascii=False) + "\n")
                return
            writer = csv.writer(f)
            writer.writerow(["input_row", "input", "text", "type", "score", "start", "end"])
            for row, (item, entities) in enumerate(zip(items, predictions, strict=True)):
                for e in entities:
                    writer.writerow([row, item.value, e["text"], e["type"], e["score"], e["start"], e["end"]])
    except OSError as exc:
        raise UserError(f"--output: cannot write {path}: {exc.strerror or exc}") from None
