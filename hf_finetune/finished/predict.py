"""Use a finished run: label texts or images with the fine-tuned model, in batches.

    load_predictor     the model, its tokenizer or eval image transform, and its label names
    read_inputs        strings, .txt/.csv/.tsv/.jsonl/.json/.parquet files, image files and folders, or '-'
    predict            top-k (label, score) per input; softmax scores, batched
    write_predictions  JSONL or CSV

Inputs are preprocessed exactly as evaluation during training did (and as `pipeline()` does): the
tokenizer with the run's max_length, or the timm eval transform from the model's pretrained config
after decoding to RGB as training did.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_finetune.errors import DataError
from hf_finetune.outputs import prediction_file
from hf_finetune.predictor import Item as Item
from hf_finetune.predictor import Predictor as Predictor
from hf_finetune.predictor import load_predictor as load_predictor
from hf_finetune.predictor import output_task as output_task
from hf_finetune.predictor import read_model_config as read_model_config
from hf_finetune.tasks import get_task

logger = logging.getLogger(__name__)

TEXT_FILES = {".txt", ".csv", ".tsv", ".jsonl", ".json", ".parquet", ".conll"}


# --- inputs --------------------------------------------------------------------------------------------

def image_extensions() -> set[str]:
    """File extensions that PIL can open."""
    from PIL import Image

    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def read_inputs(predictor: Predictor, inputs: list[str], column: str | None = None,
                explicit: list[tuple[str, str]] | None = None) -> list[Item]:
    """Turns command-line inputs into items to label.

    Text models: each input is a string to classify, or a file: .txt (one text per line), .csv/.tsv,
    .jsonl/.json or .parquet (the `column`, default the run's text column). Image models: image
    files, folders (every image inside, recursively), or those same list files naming image paths
    (relative to the list file's folder). '-' reads lines from standard input.

    An input is a file only when it names one that exists, or looks like a path (a known file
    extension, or a separator in a name without spaces): then a missing file is an error. Anything
    else is a text, however long. `explicit` settles it: ("file", name) or ("text", words), after the
    plain inputs, in their order.

    Raises:
        DataError: naming the input, file, column or row that is wrong.
    """
    column = column or predictor.default_column()
    items: list[Item] = []
    for kind, raw in [*(("input", raw) for raw in inputs), *(explicit or [])]:
        items += _read_input(predictor, raw, kind, column)
    if not items:
        raise DataError("INPUTS: nothing to label (the inputs hold no texts or images)")
    return items


def _read_input(predictor: Predictor, raw: str, kind: str, column: str) -> list[Item]:
    """The items of one input: `kind` is "input" (a file when it looks like one), "file" or "text"."""
    key = "INPUTS" if kind == "input" else f"--{kind}"
    literal = predictor.inputs.literal_inputs  # texts are given as they are; images by their files
    pair = predictor.text_pair_column if "text_pair" in predictor.inputs.input_keys else None
    if kind == "text":
        if not literal:
            raise DataError("--text: an image model labels images; give image files or folders")
        return [_text_item(raw, key, column, pair)]
    if raw == "-" and kind == "input":
        lines = [line.rstrip("\n") for line in sys.stdin]
        return [_item(predictor, line, None, "standard input", Path.cwd()) for line in lines if line.strip()]
    path, found = _existing(raw)
    suffix = path.suffix.lower() if path is not None else ""
    if found is None:
        if literal and kind == "input" and not _looks_like_path(raw):
            return [_text_item(raw, key, column, pair)]
        if not literal:
            raise DataError(f"{key}: no such file or folder: {_shorten(raw)}")
        words = "; to label these words as a text, pass them with --text" if kind == "input" else ""
        # Whole, up to 400 characters: a path is what the user must fix (pytest's own folders pass 80), and
        # an input that reads as words was taken as a text above.
        raise DataError(f"{key}: file not found: {_shorten(raw, 400)}{words}")
    if found == "file" and suffix in TEXT_FILES:
        return [_item(predictor, value, second, f"{path} row {row}", path.parent)
                for row, (value, second) in enumerate(read_column(path, column, pair))]
    if literal:
        words = f"; to label the word{'s' if ' ' in raw else ''} as a text, use --text {_shorten(raw)}" \
            if kind == "input" else ""
        raise DataError(f"{key}: {raw} is a {'folder' if found == 'folder' else 'file'}; a text model reads texts, "
                        f"or files ending in {', '.join(sorted(TEXT_FILES))}{words}")
    if found == "folder":
        images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in image_extensions())
        if not images:
            raise DataError(f"{key}: no image files in folder {raw}")
        return [Item(str(p)) for p in images]
    return [Item(str(path))]


def _text_item(raw: str, key: str, column: str, pair: str | None) -> Item:
    if pair:
        raise DataError(f"{key}: this model classifies sentence pairs; give a csv/jsonl file with columns "
                        f"'{column}' and '{pair}' instead of the text {_shorten(raw)!r}")
    return Item(raw)


def _existing(raw: str) -> tuple[Path | None, str | None]:
    """(the path, "file" or "folder") when `raw` names something that exists, else (path or None, None).

    A text is no path: one longer than a file name may be (255 bytes a component) makes the system
    refuse to look it up at all, which means "not a file" here, not an error.
    """
    try:
        path = Path(raw).expanduser()
        return path, "folder" if path.is_dir() else "file" if path.is_file() else None
    except (OSError, ValueError, RuntimeError):  # name too long, a NUL byte, ~user without a home
        return None, None


def _looks_like_path(raw: str) -> bool:
    """A name meant as a file: a known file extension, or a path separator in a name without spaces."""
    if "\n" in raw or len(raw) > 4096 or any(len(part.encode()) > 255 for part in re.split(r"[\\/]", raw)):
        return False
    if Path(raw).suffix.lower() in TEXT_FILES:
        return True
    return ("/" in raw or os.sep in raw) and not any(c.isspace() for c in raw)


def _shorten(text: str, limit: int = 80) -> str:
    """An input as a message shows it: one line, at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _item(predictor: Predictor, value: str, pair: str | None, where: str, base: Path) -> Item:
    if predictor.inputs.literal_inputs:
        return Item(value, pair)
    try:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        found = path.is_file()
    except (OSError, ValueError, RuntimeError):  # see _existing: a text too long to be a file name
        found = False
    if not found:
        raise DataError(f"INPUTS: {where} names no existing image file: {_shorten(value)}")
    return Item(str(path))


def read_column(path: Path, column: str, pair: str | None = None) -> Iterator[tuple[str, str | None]]:
    """(value, pair value) for every row of a data file; .txt files are one value per line."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if pair:
            raise DataError(f"INPUTS: {path}: this model classifies sentence pairs; a .txt file holds single texts")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"INPUTS: cannot read {path}: {exc}; save it as UTF-8 text") from None
        for line in lines:
            if line.strip():
                yield line, None
        return
    if suffix == ".conll":  # tagged sentences: their words, joined by spaces
        from hf_finetune.data.conll import read_conll

        rows = read_conll(path, column, "__tags__", key="INPUTS").to_list()
    else:
        rows = _rows(path)
    wanted = [column] + ([pair] if pair else [])
    for i, row in enumerate(rows):
        for name in wanted:
            if name not in row:
                from hf_finetune.errors import did_you_mean

                raise DataError(f"--column: {path} has no column '{name}' (columns: {', '.join(map(str, row))})"
                                + did_you_mean(name, list(map(str, row))))
            if row[name] is None or str(row[name]).strip() == "":
                raise DataError(f"INPUTS: {path} row {i}: column '{name}' is empty")
        value = row[column]
        # a list of words (the tokens column of token-classification data) is read as the text it spells
        yield (" ".join(map(str, value)) if isinstance(value, list) else str(value)), (str(row[pair]) if pair else None)


def _rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with open(path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        if suffix == ".parquet":
            import pyarrow.parquet

            return pyarrow.parquet.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
        if suffix == ".json" and text.lstrip().startswith("["):
            rows = json.loads(text)
        else:  # JSON lines (what `datasets` also accepts in a .json file)
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"INPUTS: cannot read {path}: {exc}") from None
    if not all(isinstance(row, dict) for row in rows):
        raise DataError(f"INPUTS: {path} must hold one JSON object per row")
    return rows


# --- prediction ----------------------------------------------------------------------------------------

def predict(predictor: Predictor, items: list[Item], batch_size: int = 32,
            top_k: int = 1) -> list[list[tuple[str, float]]]:
    """The `top_k` most likely (label, score) pairs per item, best first; scores are softmax probabilities.

    Raises:
        UnreadableImageError: an image file that does not decode, named.
    """
    import torch

    top_k = max(1, min(top_k, len(predictor.labels)))
    out: list[list[tuple[str, float]]] = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        with torch.inference_mode():
            probs = predictor.probabilities(batch)
        scores, ids = probs.topk(top_k, dim=-1)
        for row_scores, row_ids in zip(scores.tolist(), ids.tolist(), strict=True):
            out.append([(predictor.labels[i], s) for i, s in zip(row_ids, row_scores, strict=True)])
    return out


# --- what a prediction is, per problem --------------------------------------------------------------------

@dataclass(frozen=True)
class Records:
    """How predictions of one kind (TaskProblem.kind) are made, shown and written."""

    predict: Any  # (predictor, items, batch_size, top_k) -> one record per item
    format_line: Any  # (item, record) -> one line of text
    write: Any  # (path, items, records) -> None


def records_for(predictor: Predictor) -> Records:
    """The records the predictor's task gives: top-k classes, or entities with offsets (finished/entities.py)."""
    from hf_finetune.finished.entities import format_entities, predict_entities, write_entities
    from hf_finetune.finished.label_sets import format_label_sets, predict_label_sets, write_label_sets
    from hf_finetune.finished.masks import format_masks, predict_masks, write_masks
    from hf_finetune.finished.values import format_values, predict_values, write_values

    kinds = {"classes": Records(predict, format_line, write_predictions),
             "entities": Records(predict_entities, format_entities, write_entities),
             "values": Records(predict_values, format_values, write_values),
             "masks": Records(predict_masks, format_masks, write_masks),  # a mask PNG per image (folder output)
             "label_sets": Records(predict_label_sets, format_label_sets, write_label_sets)}
    return kinds[get_task(predictor.task).problem.kind]


# --- output ----------------------------------------------------------------------------------------------

def format_line(item: Item, top: list[tuple[str, float]], width: int = 100) -> str:
    """`pos (0.973), neg (0.027)  the film was...`: labels first, then the input, shortened to one line."""
    shown = " ".join(str(item.value).split())
    if item.pair is not None:
        shown += " || " + " ".join(item.pair.split())
    if len(shown) > width:
        shown = shown[: width - 1] + "…"
    return ", ".join(f"{label} ({score:.3f})" for label, score in top) + "  " + shown


def write_predictions(path: str | os.PathLike, items: list[Item], predictions: list[list[tuple[str, float]]],
                      ) -> None:
    """Writes one record per input: JSONL (input, label, score, top_k) or CSV (input, label, score, label_2, ...).

    Raises:
        UserError: the file name ends in neither .jsonl nor .csv.
    """
    path = prediction_file(path)
    suffix = path.suffix.lower()
    has_pair = any(item.pair is not None for item in items)
    if suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for item, top in zip(items, predictions, strict=True):
                record: dict[str, Any] = {"input": item.value}
                if has_pair:
                    record["input_pair"] = item.pair
                record.update(label=top[0][0], score=top[0][1],
                              top_k=[{"label": label, "score": score} for label, score in top])
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    k = max(len(top) for top in predictions)
    header = ["input"] + (["input_pair"] if has_pair else []) + ["label", "score"]
    header += [f"{name}_{i}" for i in range(2, k + 1) for name in ("label", "score")]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for item, top in zip(items, predictions, strict=True):
            row = [item.value] + ([item.pair] if has_pair else [])
            writer.writerow(row + [v for pair in top for v in pair])
