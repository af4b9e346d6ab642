"""Load the raw splits a recipe names: Hub datasets, local data files, image folders, saved datasets."""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict

from hf_finetune import hub
from hf_finetune.data.conll import read_conll
from hf_finetune.errors import DataError
from hf_finetune.recipe import FILE_FORMATS, DataSpec

logger = logging.getLogger(__name__)


def load_raw_splits(data: DataSpec) -> DatasetDict:
    """Loads every split of the recipe's data source, before any column or label handling.

    Image columns given as file paths (csv/json) are resolved relative to the data file's folder and
    typed as `datasets.Image`, not decoded yet.
    """
    if data.files is not None:
        columns = (data.columns.tokens or "tokens", data.columns.tags or "tags")  # what CoNLL files are read into
        return DatasetDict({split: _load_files(split, paths, columns=columns) for split, paths in data.files.items()})
    if data.image_folder is not None and data.columns.mask is not None:  # semantic segmentation: image + mask
        from hf_finetune.data.masks import load_mask_folders

        return load_mask_folders(data.image_folder, data.mask_folder, data.columns.image, data.columns.mask)
    if data.image_folder is not None:
        return _load_image_folder(data.image_folder)
    return _load_dataset(data)


def load_files(patterns: list[str], key: str) -> Dataset:
    """Rows of local files outside the recipe's splits (the unlabelled pool); messages name `key`."""
    return _load_files("unlabeled", patterns, key)


def _load_files(split: str, patterns: list[str], key: str | None = None,
                columns: tuple[str, str] = ("tokens", "tags")) -> Dataset:
    key = key or f"data.files.{split}"
    paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    if not paths:
        raise DataError(f"{key}: no file matches {', '.join(patterns)}")
    parts = []
    for path in paths:
        suffix = Path(path).suffix.lower()
        if suffix not in FILE_FORMATS:  # tar shards: a streamed run's data, read again by a map-style command
            raise DataError(f"{key}: {path}: {suffix} files are read as a stream only (data.streaming); this "
                            f"command reads data whole: give {', '.join(FILE_FORMATS)} files")
        builder = FILE_FORMATS[suffix]
        kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
        if builder == "conll":
            ds = read_conll(path, *columns, key=key)
            parts.append(ds.add_column("__source_file__", [str(Path(path).resolve())] * len(ds)))
            continue
        try:
            ds = datasets.load_dataset(builder, data_files={"data": path}, split="data", **kwargs)
        except Exception as exc:  # parse errors surface as many exception types from pyarrow/pandas
            cause = exc.__cause__ or exc
            if "corresponds to no data" in str(exc):  # a header and no rows
                raise DataError(f"{key}: {path} holds no rows") from None
            raise DataError(f"{key}: cannot read {path} as {builder}: {cause}") from None
        if len(ds) == 0:
            raise DataError(f"{key}: {path} holds no rows")
        parts.append(ds.add_column("__source_file__", [str(Path(path).resolve())] * len(ds)))
    if len(parts) == 1:
        return parts[0]
    try:
        return datasets.concatenate_datasets(parts)
    except ValueError as exc:
        raise DataError(f"{key}: the files of split '{split}' have different columns or types: {exc}") from None


def _load_image_folder(folder: str) -> DatasetDict:
    try:
        dd = datasets.load_dataset("imagefolder", data_dir=folder)
    except Exception as exc:
        raise DataError(f"data.image_folder: cannot read {folder} as an image folder: {exc}") from None
    if not isinstance(dd, DatasetDict) or not dd:
        raise DataError(f"data.image_folder: no images found under {folder}")
    return dd


def _load_dataset(data: DataSpec) -> DatasetDict:
    name = data.dataset
    path = Path(name).expanduser()
    if path.exists():
        if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
        try:
            return datasets.load_dataset(str(path), data.config)
        except Exception as exc:
            raise DataError(f"data.dataset: cannot load the local dataset at {path}: {exc}") from None
    if hub.looks_like_path(name):
        raise DataError(f"data.dataset: local dataset folder not found: {name}")

    def load() -> DatasetDict:
        return datasets.load_dataset(name, data.config, revision=data.revision)

    reason = hub.unreachable_reason()
    try:
        if reason is None:
            loaded = load()
        else:
            with hub.datasets_offline():
                loaded = load()
            logger.info("Hub unreachable (%s): loaded dataset '%s' from the local cache", reason, name)
    except ValueError as exc:
        # datasets raises ValueError for a wrong or missing configuration name, listing the valid ones.
        raise DataError(f"data.config: {exc}") from None
    except (ConnectionError, FileNotFoundError, OSError) as exc:
        if reason is not None:
            raise hub.unreachable_error(
                "data.dataset",
                name,
                "dataset",
                "Where you are online, run `datasets.load_dataset(...).save_to_disk('data/mydataset')` and set "
                "data.dataset: data/mydataset, or export the splits to csv/jsonl/parquet and use data.files.",
            ) from None
        raise DataError(f"data.dataset: cannot load '{name}' from the Hub: {exc}") from None
    if not isinstance(loaded, DatasetDict):
        loaded = DatasetDict({"train": loaded})
    return loaded
