"""`data.streaming`: the data stage on `datasets` iterable datasets, never holding a split in memory.

    load_streams         Hub datasets, local files (csv/tsv/json/jsonl/parquet, tar shards in the webdataset
                         layout), image folders, saved datasets: one IterableDataset per split
    stream_head          the first rows of a stream as a small map-style Dataset: the label space, class
                         counts and max_length are read from it (the log says so), never from the whole split
    build_streaming_datasets
                         label space -> validation carved from the head (a row count) -> caps (`take`) ->
                         labels encoded, a seeded shuffle buffer, this process's shard of the training
                         stream (`split_dataset_by_node`), inputs encoded on the fly (`map`)

Resuming a stream from its saved position is the training stage's (training/streams.py): it wraps the
training stream and saves its `state_dict()` with every checkpoint.
"""

from __future__ import annotations

import glob
import itertools
import logging
from pathlib import Path
from typing import Any

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset
from datasets.distributed import split_dataset_by_node

from hf_finetune import hub
from hf_finetune.data.labels import LABEL_COLUMN, LabelSpace, label_mapping
from hf_finetune.data.splits import check_columns, named_splits
from hf_finetune.errors import DataError
from hf_finetune.recipe import DataSpec
from hf_finetune.recipe.sections.data import STREAM_FILE_FORMATS

logger = logging.getLogger(__name__)


def load_streams(data: DataSpec) -> dict[str, IterableDataset]:
    """Every split of the recipe's data source as a stream (split name -> IterableDataset); nothing is read
    beyond what finding the files and the first rows' types takes."""
    if data.files is not None:
        return {split: _stream_files(split, patterns) for split, patterns in data.files.items()}
    if data.image_folder is not None:
        return _as_streams(lambda: datasets.load_dataset("imagefolder", data_dir=data.image_folder, streaming=True),
                           "data.image_folder", data.image_folder)
    path = Path(data.dataset).expanduser()
    if path.exists() and ((path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists()):
        loaded = datasets.load_from_disk(str(path))  # memory-mapped Arrow files: streamed from disk
        parts = loaded if isinstance(loaded, DatasetDict) else {"train": loaded}
        return {split: ds.to_iterable_dataset() for split, ds in parts.items()}
    if path.exists():
        return _as_streams(lambda: datasets.load_dataset(str(path), data.config, streaming=True), "data.dataset",
                           str(path))
    if hub.looks_like_path(data.dataset):
        raise DataError(f"data.dataset: local dataset folder not found: {data.dataset}")
    reason = hub.unreachable_reason()
    if reason is not None:  # a stream reads the Hub as training goes: there is no cache to fall back on
        raise hub.unreachable_error("data.dataset", data.dataset, "dataset",
                                    "A streamed Hub dataset is read from the Hub as training goes; offline, export "
                                    "its splits to parquet/jsonl files and stream them with data.files.")
    return _as_streams(lambda: datasets.load_dataset(data.dataset, data.config, revision=data.revision,
                                                     streaming=True), "data.dataset", data.dataset)


def _as_streams(load: Any, key: str, where: str) -> dict[str, IterableDataset]:
    try:
        loaded = load()
    except ValueError as exc:  # a wrong or missing configuration name, listing the valid ones
        raise DataError(f"data.config: {exc}") from None
    except Exception as exc:  # missing files, unreadable folders and network failures come as many types
        raise DataError(f"{key}: cannot stream {where}: {exc}") from None
    streams = dict(loaded) if isinstance(loaded, dict) else {"train": loaded}
    if not streams:
        raise DataError(f"{key}: no data found in {where}")
    return streams


def _stream_files(split: str, patterns: list[str]) -> IterableDataset:
    key = f"data.files.{split}"
    paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    if not paths:
        raise DataError(f"{key}: no file matches {', '.join(patterns)}")
    suffix = Path(paths[0]).suffix.lower()
    kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
    try:  # one shard per file: a distributed run splits the files between processes when they divide evenly
        return datasets.load_dataset(STREAM_FILE_FORMATS[suffix], data_files={"data": paths}, split="data", streaming=True,
                                     **kwargs)
    except Exception as exc:
        raise DataError(f"{key}: cannot stream {', '.join(paths)} as {STREAM_FILE_FORMATS[suffix]}: {exc}") from None


def stream_head(stream: IterableDataset, rows: int, key: str, split: str) -> Dataset:
    """The first `rows` rows of a stream as a map-style Dataset (its types as the stream declares them).

    Raises:
        DataError: the split has no rows, or its rows cannot be read (a parse error names the file).
    """
    try:
        head = list(itertools.islice(iter(stream), rows))
    except Exception as exc:
        raise DataError(f"{key}: cannot read split '{split}': {exc}") from None
    if not head:
        raise DataError(f"{key}: split '{split}' is empty: it has no rows")
    features = stream.features
    return Dataset.from_list(head, features=features) if features else Dataset.from_list(head)


def carve_head(train: IterableDataset, data: DataSpec) -> tuple[IterableDataset, IterableDataset, int]:
    """(train without its first rows, those rows as validation, their count): a stream has no length to take
    a share of, so data.validation_size must be a row count."""
    if data.validation_size < 1:
        raise DataError(f"data.validation_size: the stream has no validation split (data.splits.validation), and "
                        f"{data.validation_size} is a share of a length a stream does not know: give a row count "
                        "(e.g. data.validation_size: 1000), taken from the head of the training stream")
    n = int(data.validation_size)
    return train.skip(n), train.take(n), n


class EncodeLabels:
    """`IterableDataset.map` function: the raw label column -> class ids; a label outside the space (read from
    the head of the training stream) stops the run naming it and the keys that fix it."""

    def __init__(self, column: str, mapping: dict[object, int], space: LabelSpace, split: str, head_rows: int):
        self.column, self.mapping, self.space, self.split, self.head_rows = column, mapping, space, split, head_rows

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        ids = []
        for value in batch[self.column]:
            idx = self.mapping.get(value)
            if idx is None:
                raise DataError(
                    f"data.columns.label: split '{self.split}' has label {value!r}, which is not among the classes "
                    f"read from the first {self.head_rows} rows of the training stream ({', '.join(self.space.names)})"
                    "; list every class in data.label_names (or raise data.head_rows)")
            ids.append(idx)
        return {LABEL_COLUMN: ids}


def build_streaming_datasets(recipe: Any, encoding: Any, labeling: Any, process_index: int = 0,
                             num_processes: int = 1) -> tuple[dict[str, Any], LabelSpace, Any, dict[str, str], Dataset]:
    """The recipe's data as streams, labelled and encoded on the fly (data.streaming).

    Args:
        recipe: the validated recipe (data.streaming: true; single-label classification).
        encoding: the task's encoding (data/encodings.py), which encodes streams with `stream()`.
        labeling: the task's labeling; reads the label space from the head of the training stream.
        process_index, num_processes: this process of a distributed run reads its own shard of the
            training stream (`datasets.distributed.split_dataset_by_node`).

    Returns:
        (role -> IterableDataset, the label space, the collator, role -> where its rows come from, the
        labelled head of the training stream).
    """
    data = recipe.data
    streams = named_splits(load_streams(data), data)  # a missing validation is carved from the head
    names = {role: getattr(data.splits, role) for role in streams}
    sources = {role: f"split '{name}' (streamed)" for role, name in names.items()}
    if "validation" not in streams:
        streams["train"], streams["validation"], n = carve_head(streams["train"], data)
        names["validation"] = f"{data.splits.train} (head)"
        sources["validation"] = f"the first {n} rows of split '{data.splits.train}' (streamed; train skips them)"
    streams = {role: encoding.read_stream(recipe, stream, names[role]) for role, stream in streams.items()}
    heads = {role: stream_head(stream, data.head_rows, f"data.splits.{role}", names[role])
             for role, stream in streams.items()}
    check_columns(heads, data, split_names=names)
    encoding.check_head(recipe, heads, names)
    try:
        labelled, space, _ = labeling.prepare(heads, recipe, names)
    except DataError as exc:
        raise DataError(f"{exc} (classes are read from the first {data.head_rows} rows of the training stream: "
                        "list every class in data.label_names, or raise data.head_rows)") from None
    complete = data.label_names is not None or isinstance(heads["train"].features[data.columns.label], ClassLabel)
    logger.info("Label space: %d classes (%s), %s", space.num_labels, ", ".join(space.names),
                "as the data declares them" if complete
                else f"read from the first {len(heads['train'])} rows of the training stream (data.head_rows); "
                     "a later row with another label stops the run")
    mapping = label_mapping(heads["train"].features[data.columns.label], space)
    out = {}
    for role, stream in streams.items():
        cap = getattr(data.max_samples, role)
        if cap is not None:
            stream = stream.take(cap)
            sources[role] += f", its first {cap} rows"
        stream = stream.map(EncodeLabels(data.columns.label, mapping, space, names[role], data.head_rows),
                            batched=True, remove_columns=[data.columns.label])
        if role == "train":
            if data.shuffle_buffer > 0:
                stream = stream.shuffle(seed=data.seed, buffer_size=data.shuffle_buffer)
                sources[role] += f", shuffled in a buffer of {data.shuffle_buffer} rows (seed {data.seed})"
            if num_processes > 1:
                stream = split_dataset_by_node(stream, rank=process_index, world_size=num_processes)
                sources[role] += f", shard {process_index + 1} of {num_processes}"
        # the columns a stream of unknown features holds, as its head shows them, labels encoded
        columns = [c for c in heads[role].column_names if c != data.columns.label] + [LABEL_COLUMN]
        out[role] = encoding.stream(recipe, stream, role, names[role], columns)
    for role in out:
        logger.info("%-10s streamed from %s", role, sources[role])
    return out, space, encoding.collator(), sources, labelled["train"]
