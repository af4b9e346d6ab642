"""Text preprocessing: tokenize once (batched, cached on disk), pad per batch at collation time."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, Value

from hf_finetune.data.labels import LABEL_COLUMN, blank_rows, row_hint
from hf_finetune.errors import DataError

logger = logging.getLogger(__name__)

# Bump when the tokenization function changes, so old caches are not reused.
PREPROCESS_VERSION = "text-2"
LENGTH_COLUMN = "length"  # tokens per row, for length-grouped batching


def check_text_columns(splits: dict[str, Dataset], columns: list[tuple[str, str]], split_names: dict[str, str]) -> None:
    """Text columns must hold strings, with no missing values (the tokenizer cannot read None)."""
    for role, ds in splits.items():
        for key, column in columns:
            feature = ds.features[column]
            if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
                raise DataError(
                    f"data.columns.{key}: column '{column}' of split '{split_names[role]}' holds {feature!r}, "
                    "not text"
                )
            missing = blank_rows(ds, column)
            if missing:
                raise DataError(
                    f"data.columns.{key}: column '{column}' of split '{split_names[role]}' has "
                    f"{len(missing)} empty (null, empty or whitespace-only) rows, first at {row_hint(ds, missing[0])}"
                )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that changes the tokenizer's output (vocabulary, rules, special tokens)."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # Truncation and padding settings are per-call state that tokenizing itself changes.
        state.pop("truncation", None)
        state.pop("padding", None)
        h.update(json.dumps(state, sort_keys=True).encode())
    else:
        h.update(datasets.fingerprint.Hasher.hash(tokenizer).encode())
    special = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    h.update(json.dumps([type(tokenizer).__name__, special, tokenizer.padding_side,
                         tokenizer.truncation_side]).encode())
    return h.hexdigest()[:16]


def tokenize_batch(batch: dict[str, list], tokenizer: Any, text: str, text_pair: str | None, max_length: int):
    """Token ids (and segment ids for pairs) and the length of each row of a batch, unpadded."""
    pair = batch[text_pair] if text_pair else None
    # No padding here: collation pads each batch to its own longest row, and builds the attention
    # mask then. Only what cannot be rebuilt is stored: token ids, and segment ids for pairs (for a
    # single text they are all zeros, the models' default) - a third of the bytes to write and read.
    encoded = tokenizer(
        batch[text], pair, truncation=True, max_length=max_length, return_attention_mask=False,
        return_token_type_ids=pair is not None and "token_type_ids" in tokenizer.model_input_names,
    )
    encoded[LENGTH_COLUMN] = [len(ids) for ids in encoded["input_ids"]]
    return encoded


@dataclass
class TokenizedSplit:
    dataset: Dataset
    cache_file: str
    reused_cache: bool


def tokenize_split(
    ds: Dataset,
    tokenizer: Any,
    text: str,
    text_pair: str | None,
    max_length: int,
    cache_dir: Path,
    num_proc: int | None,
    description: str,
) -> TokenizedSplit:
    """Tokenizes one split with batched `Dataset.map`, cached under a key of data + tokenizer + settings.

    The key includes the source data's fingerprint, the tokenizer's fingerprint, max_length and the
    columns, so a second run of the same recipe reuses the cache and a changed tokenizer or
    max_length does not.
    """
    key_parts = [ds._fingerprint, tokenizer_fingerprint(tokenizer), str(max_length), text, str(text_pair),
                 PREPROCESS_VERSION]
    key = hashlib.sha256("|".join(key_parts).encode()).hexdigest()[:24]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_file = cache_dir / f"tokenized-{key}.arrow"
    if num_proc and num_proc > 1:
        reused = len(list(cache_dir.glob(f"tokenized-{key}_*_of_{num_proc:05d}.arrow"))) == num_proc
    else:
        reused = cache_file.exists()
    keep = [LABEL_COLUMN] if LABEL_COLUMN in ds.column_names else []
    tokenized = ds.map(
        tokenize_batch,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "text": text, "text_pair": text_pair, "max_length": max_length},
        remove_columns=[c for c in ds.column_names if c not in keep],
        new_fingerprint=key,
        cache_file_name=str(cache_file),
        load_from_cache_file=True,
        num_proc=num_proc,
        desc=description,
    )
    return TokenizedSplit(tokenized, str(cache_file), reused)


def default_max_length(tokenizer: Any, model_config: Any) -> int:
    """The longest input the backbone accepts: the tokenizer's limit, else the position embeddings'."""
    limits = []
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:  # "no limit" is stored as a huge int
        limits.append(tok_limit)
    positions = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits) if limits else 512


class TextCollator:
    """Pads each batch to its longest row (a multiple of `pad_to_multiple_of` for tensor cores)."""

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [{k: v for k, v in f.items() if k != LENGTH_COLUMN} for f in features]
        return self.tokenizer.pad(rows, padding=True, pad_to_multiple_of=self.pad_to_multiple_of,
                                  return_tensors="pt")
