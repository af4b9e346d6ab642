"""`data`: the data source, splits, columns and caps; and the checks that need only this section."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from hf_finetune.errors import Problem, show
from hf_finetune.recipe.sections.base import Section

# Local data files: extension -> `datasets` builder name.
FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
                ".conll": "conll"}  # conll: a token per line, its tag in the last column (data/conll.py)
# data.streaming also reads tar shards in the webdataset layout (files of one sample share a name, one file
# per column: 0001.jpg + 0001.cls); map-style loading does not
STREAM_FILE_FORMATS = {**FILE_FORMATS, ".tar": "webdataset"}


class Columns(Section):
    text: str | None = Field(None, description="Text column (text-classification; default `text`).")
    text_pair: str | None = Field(None, description="Second text column for sentence-pair tasks.")
    image: str | None = Field(
        None, description="Image column: images or file paths (image-classification; default `image`)."
    )
    label: str = Field("label", description="Label column: strings or integers, ClassLabel or plain.")
    tokens: str | None = Field(None, description="Words of each sentence, a list of strings (token-classification; "
                               "default `tokens`).")
    tags: str | None = Field(None, description="Tag of each word: names, or ids with a ClassLabel sequence feature "
                             "(token-classification; default `tags`).")
    targets: list[str] | None = Field(None, description="Numeric target columns, one model output each "
                                      "(text-regression, image-regression; default: the one column data.columns.label).")
    mask: str | None = Field(None, description="Mask of each image: a PNG of class ids (or a palette PNG), or its "
                             "path (semantic-segmentation; default `mask`).")
    labels: list[str] | None = Field(None, min_length=1, description="One 0/1 column per label; the column names "
                                     "are the labels (text-multi-label, image-multi-label).")


class SplitNames(Section):
    train: str = Field("train", description="Split to train on.")
    validation: str | None = Field(
        "validation",
        description="Split for model selection; when the dataset has none (or null), carved from train.",
    )
    test: str | None = Field("test", description="Split for the final held-out score; null for none.")


class SampleCaps(Section):
    train: int | None = Field(None, gt=0, description="Use at most this many training rows (seeded shuffle).")
    validation: int | None = Field(None, gt=0, description="Use at most this many validation rows.")
    test: int | None = Field(None, gt=0, description="Use at most this many test rows.")


class UnlabeledSpec(Section):
    """Rows without labels for self-training: the recipe's input columns; a label column is only scored."""

    files: list[str] | None = Field(
        None, description="Local files of unlabelled rows (csv/tsv/json/jsonl/parquet, globs allowed), with the "
        "recipe's input columns; a label column there is never trained on, only used to score the pseudo-labels.",
    )
    split: str | None = Field(
        None, description="A split of the recipe's own data source to use without its labels (e.g. unlabeled).",
    )
    image_folder: str | None = Field(
        None, description="A folder of images (any depth, no class folders needed) to use without labels.",
    )
    max_samples: int | None = Field(
        None, gt=0, description="Use at most this many unlabelled rows (seeded by data.seed).",
    )

    @field_validator("files", mode="before")
    @classmethod
    def _paths_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DataSpec(Section):
    dataset: str | None = Field(
        None, description="Hub dataset id (stanfordnlp/imdb), or a folder written by `Dataset.save_to_disk`."
    )
    config: str | None = Field(None, description="Hub dataset configuration name (e.g. sst2 for glue).")
    revision: str | None = Field(None, description="Hub dataset branch, tag or commit.")
    files: dict[str, list[str]] | None = Field(
        None,
        description="Local files per split: {train: a.csv, test: b.jsonl}; csv/tsv/json/jsonl/parquet, globs allowed.",
    )
    image_folder: str | None = Field(
        None,
        description="Folder of images, one sub-folder per class (optionally inside train/validation/test folders).",
    )
    splits: SplitNames = Field(default_factory=SplitNames, description="Which split names to use.")
    columns: Columns = Field(default_factory=Columns, description="Which columns hold inputs and labels.")
    label_names: list[str] | None = Field(
        None, description="Names for integer labels 0..K-1 when the dataset has no ClassLabel names."
    )
    validation_size: float = Field(
        0.1, gt=0, description="Share (<1) or number of rows (>=1) of train carved out as validation when needed."
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for carving validation and for sample caps.")
    max_samples: SampleCaps = Field(default_factory=SampleCaps, description="Per-split row caps for quick runs.")
    bad_images: Literal["error", "skip"] = Field(
        "error", description="Unreadable images: stop with their paths, or skip them and report the count."
    )
    num_proc: int | None = Field(None, gt=0, description="Processes for dataset preprocessing (default: 1).")
    cache_dir: str | None = Field(
        None, description="Where preprocessed splits are cached (default: the `datasets` cache)."
    )
    verify_images: bool = Field(
        True,
        description="Decode every image once before training (cached) to find unreadable files up front.",
    )
    unlabeled: UnlabeledSpec | None = Field(
        None, description="Unlabelled rows for self-training (needs a self_training section).",
    )
    label_separator: str | None = Field(
        None, min_length=1, description="Multi-label: the label column holds strings of labels joined by this "
        "separator ('|' for 'joy|trust'); without it the column holds a list of labels per row.",
    )
    tag_scheme: Literal["IOB2", "IOB1", "IOBES"] = Field(
        "IOB2", description="token-classification: how the tags mark entities: IOB2 (B- starts every entity), IOB1 "
        "(B- only between two entities of one type) or IOBES (S- single, E- end); read into IOB2.",
    )

    mask_folder: str | None = Field(
        None, description="semantic-segmentation: folder of masks (PNG of class ids) mirroring data.image_folder, "
        "one mask per image with the same relative path and stem.",
    )
    ignore_index: int = Field(
        255, ge=0, le=255, description="semantic-segmentation: the mask value of pixels that are not scored (loss "
        "and metrics).",
    )
    image_size: int | None = Field(
        None, ge=16, le=4096, description="semantic-segmentation: the side in pixels of the square images and masks "
        "trained and evaluated on (default: the backbone's pretrained input size).",
    )
    streaming: bool = Field(
        False, description="Read the data as a stream (`datasets` iterable datasets): rows are read, shuffled in a "
        "buffer and preprocessed as training takes them, never all in memory; needs training.max_steps "
        "(text-classification and image-classification; docs/streaming.md).",
    )
    shuffle_buffer: int = Field(
        10_000, ge=0, description="data.streaming: rows held in the seeded shuffle buffer of the training stream "
        "(0: the source's order).",
    )
    head_rows: int = Field(
        1_000, ge=1, description="data.streaming: rows read from the head of the training stream to find the "
        "label space, class counts and max_length (the rest of the stream is never held).",
    )
    label_names_file: str | None = Field(
        None, description="semantic-segmentation: a text file of class names, one per line (line i names class id "
        "i); or give data.label_names.",
    )

    @field_validator("files", mode="before")
    @classmethod
    def _paths_as_lists(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for split, paths in value.items():
            if isinstance(paths, str):
                paths = [paths]
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ValueError(f"data.files.{split} must be a path or a list of paths, got {paths!r}")
            out[split] = paths
        return out

    @field_validator("unlabeled", mode="before")
    @classmethod
    def _pool_files_short_form(cls, value: Any) -> Any:
        """`unlabeled: pool.csv` (or a list of files) is short for `unlabeled: {files: pool.csv}`."""
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return {"files": value}
        if value is not None and not isinstance(value, dict | UnlabeledSpec):
            raise ValueError(f"must be a section (a mapping of keys), got {show(value)} ({type(value).__name__}); "
                             "or the pool's files: data.unlabeled: pool.csv")
        return value

    @field_validator("validation_size")
    @classmethod
    def _whole_number_when_count(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError("a row count (>= 1) must be a whole number; use a value below 1 for a share")
        return value


def data_problems(data: DataSpec, for_training: bool = True) -> list[Problem]:
    """One data source, its files and folders present, and columns that do not clash.

    Args:
        data: the validated section.
        for_training: the recipe trains, so data.files needs the training split (`evaluate` picks its own).
    """
    from hf_finetune.recipe.sections.output import folder_problems

    problems = folder_problems({"data.cache_dir": data.cache_dir}, writable=for_training)
    cols = data.columns
    sources = [k for k in ("dataset", "files", "image_folder") if getattr(data, k) is not None]
    if not sources:
        problems.append(Problem("data", "say where the data is: data.dataset, data.files or data.image_folder"))
    elif len(sources) > 1:
        problems.append(
            Problem("data", f"give one data source, not {' and '.join('data.' + s for s in sources)}")
        )
    for key in ("config", "revision"):
        if getattr(data, key) is not None and data.dataset is None:
            problems.append(Problem(f"data.{key}", "only applies with data.dataset (a Hub dataset)"))

    if data.files is not None:
        if not data.files:
            problems.append(Problem("data.files", "is empty; give at least a train file"))
        elif for_training and data.splits.train not in data.files:
            problems.append(
                Problem(
                    "data.files",
                    f"has no '{data.splits.train}' split (the training split, data.splits.train); "
                    f"keys given: {', '.join(data.files)}",
                )
            )
        for split, paths in data.files.items():
            key = f"data.files.{split}"
            if not paths:
                problems.append(Problem(key, "no files given"))
            formats = STREAM_FILE_FORMATS if data.streaming else FILE_FORMATS
            for p in paths:
                suffix = Path(p).suffix.lower()
                if suffix in STREAM_FILE_FORMATS and suffix not in formats:
                    problems.append(Problem(key, f"'{p}': tar shards (webdataset layout) are read as a stream: "
                                                 "set data.streaming: true"))
                elif suffix not in formats:
                    problems.append(
                        Problem(key, f"'{p}': unsupported file type; use {', '.join(formats)}")
                    )
                elif not glob.glob(p):
                    problems.append(Problem(key, f"file not found: {p}"))
            if len({STREAM_FILE_FORMATS.get(Path(p).suffix.lower()) for p in paths}) > 1:
                problems.append(Problem(key, "files of one split must share a format"))
    if data.image_folder is not None and not Path(data.image_folder).is_dir():
        problems.append(Problem("data.image_folder", f"folder not found: {data.image_folder}"))
    if data.dataset is not None and data.dataset.startswith((".", "/", "~")) and not Path(data.dataset).exists():
        problems.append(Problem("data.dataset", f"local dataset folder not found: {data.dataset}"))
    if data.label_names is not None and len(set(data.label_names)) != len(data.label_names):
        problems.append(Problem("data.label_names", "names must be unique"))
    used = [c for c in (cols.text, cols.text_pair, cols.image) if c is not None]
    if cols.label in used:
        problems.append(Problem("data.columns.label", f"'{cols.label}' is also used as an input column"))
    if cols.text is not None and cols.text == cols.text_pair:
        problems.append(Problem("data.columns.text_pair", "must differ from data.columns.text"))
    return problems
