"""Word-level text: sentences given as words, tagged word by word (token classification).

Each sentence is tokenized once by the backbone's fast tokenizer (`is_split_into_words`, whose word
ids say which sub-tokens make each word) and cached on disk like the other text preprocessing.

    labels      the first sub-token of a word carries the word's tag, the others -100 (ignored in the
                loss); with `label_all_tokens` every sub-token carries it (B- becoming I- after the first)
    windows     a sentence longer than max_length is not cut: it becomes windows of whole words, which
                share about `stride` sub-tokens with the next; each word is owned by the window where it
                has the most context around it (the first half of an overlap by the window before, the
                second by the window after), and only the owner scores it, so the predictions join
                back into one tag per word (metrics/entities.py, column `sentence`)
    padding     per batch, labels padded with -100 (DataCollatorForTokenClassification)

A word the tokenizer turns into no sub-token at all (a zero-width or control character) is read
as the unknown token, so every word keeps its tag and its place.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from hf_finetune.data.encodings import Encoded, default_cache_dir
from hf_finetune.data.labels import LABEL_COLUMN
from hf_finetune.data.text import LENGTH_COLUMN, tokenizer_fingerprint
from hf_finetune.errors import DataError

logger = logging.getLogger(__name__)

PREPROCESS_VERSION = "words-1"  # bump when the function below changes, so old caches are not reused
SENTENCE_COLUMN = "sentence"  # the row's source sentence: windows of one sentence share it
IGNORED = -100
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", LABEL_COLUMN)


def default_stride(max_length: int) -> int:
    """Sub-tokens shared by consecutive windows when the recipe names none: a quarter of max_length."""
    return max(0, max_length // 4)


def special_template(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after one text ([CLS] and [SEP] for BERT)."""
    encoded = tokenizer(["x"], is_split_into_words=True)
    words = encoded.word_ids()
    first = next(i for i, w in enumerate(words) if w is not None)
    last = max(i for i, w in enumerate(words) if w is not None)
    ids = encoded["input_ids"]
    return list(ids[:first]), list(ids[last + 1:])


def windows(lengths: list[int], budget: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(first word, last word + 1, first owned word, last owned word + 1) of each window of a sentence
    whose words have `lengths` sub-tokens (each already at most `budget`)."""
    spans: list[list[int]] = []
    start, n = 0, len(lengths)
    while True:
        end, used = start, 0
        while end < n and used + lengths[end] <= budget:
            used += lengths[end]
            end += 1
        spans.append([start, end])
        if end >= n:
            break
        nxt, shared = end, 0
        while nxt - 1 > start and shared + lengths[nxt - 1] <= stride:
            nxt -= 1
            shared += lengths[nxt]
        start = nxt
    out = []
    owned_from = 0
    for k, (first, last) in enumerate(spans):
        if k + 1 < len(spans):
            following = spans[k + 1][0]
            owned_to = following + (last - following + 1) // 2  # the first half of the overlap stays here
        else:
            owned_to = last
        out.append((first, last, owned_from, owned_to))
        owned_from = owned_to
    return out


def continuation(tag_id: int, names: list[str], ids: dict[str, int]) -> int:
    """The tag of a word's later sub-tokens under label_all_tokens: B-X becomes I-X (as run_ner.py does)."""
    name = names[tag_id]
    return ids.get("I-" + name[2:], tag_id) if name.startswith("B-") else tag_id


def _encode(batch: dict[str, list], indices: list[int], tokenizer: Any, tokens: str, max_length: int,
            stride: int, owned_only: bool, label_all: bool, names: list[str]) -> dict[str, list]:
    prefix, suffix = special_template(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    label_ids = {name: i for i, name in enumerate(names)}
    encoded = tokenizer(batch[tokens], is_split_into_words=True, add_special_tokens=False)
    out: dict[str, list] = {"input_ids": [], LABEL_COLUMN: [], SENTENCE_COLUMN: [], LENGTH_COLUMN: []}
    for row, index in enumerate(indices):
        words = batch[tokens][row]
        tags = batch[LABEL_COLUMN][row] if LABEL_COLUMN in batch else [IGNORED] * len(words)
        pieces: list[list[int]] = [[] for _ in words]
        for token_id, word in zip(encoded["input_ids"][row], encoded.word_ids(row), strict=True):
            if word is not None:
                pieces[word].append(token_id)
        pieces = [p[:budget] if p else [tokenizer.unk_token_id] for p in pieces]  # a word of no sub-token: [UNK]
        for first, last, own_from, own_to in windows([len(p) for p in pieces], budget, stride):
            ids, labels = list(prefix), [IGNORED] * len(prefix)
            for word in range(first, last):
                scored = not owned_only or own_from <= word < own_to
                tag = tags[word] if scored else IGNORED
                later = continuation(tag, names, label_ids) if label_all and tag >= 0 and not owned_only else IGNORED
                ids += pieces[word]
                labels += [tag] + [later] * (len(pieces[word]) - 1)
            ids += suffix
            labels += [IGNORED] * len(suffix)
            out["input_ids"].append(ids)
            out[LABEL_COLUMN].append(labels)
            out[SENTENCE_COLUMN].append(index)
            out[LENGTH_COLUMN].append(len(ids))
    return out


@dataclass
class WordEncoding:
    """Tokenizes words with the backbone's fast tokenizer at the run's max_length, in overlapping windows."""

    tokenizer: Any
    max_length: int
    stride: int
    label_all_tokens: bool = False
    pad_to_multiple_of: int | None = None

    def read(self, recipe: Any, ds: Dataset, split: str) -> Dataset:
        """Words need nothing before their tags are read."""
        return ds

    def prepare(self, recipe: Any, splits: dict[str, Dataset], names: dict[str, str]) -> Encoded:
        data = recipe.data
        cache_dir = Path(data.cache_dir) if data.cache_dir else default_cache_dir()
        cache_dir.mkdir(parents=True, exist_ok=True)
        out, cache = {}, {}
        for role, ds in splits.items():
            feature = ds.features.get(LABEL_COLUMN)
            tag_names = list(feature.feature.names) if feature is not None else []
            owned_only = role != "train"  # evaluation scores each word once; training learns from every window
            ds_out, file, reused = self._tokenize(ds, data.columns.tokens, tag_names, owned_only, cache_dir,
                                                  data.num_proc, f"tokenizing {role}")
            if owned_only:  # evaluation keeps the order of the sentences: no length grouping of its rows
                ds_out = ds_out.remove_columns([LENGTH_COLUMN])
            extra = len(ds_out) - len(ds)
            if extra:
                from collections import Counter

                long = sum(1 for n in Counter(ds_out[SENTENCE_COLUMN]).values() if n > 1)
                logger.info("%s: %d sentences longer than %d tokens are read in %d overlapping windows (%d tokens "
                            "shared), not truncated", role, long, self.max_length, long + extra, self.stride)
            out[role] = ds_out
            cache[role] = {"file": file, "reused": reused}
        return Encoded(out, WordCollator(self.tokenizer, self.pad_to_multiple_of), cache=cache)

    def _tokenize(self, ds: Dataset, tokens: str, names: list[str], owned_only: bool, cache_dir: Path,
                  num_proc: int | None, description: str) -> tuple[Dataset, str, bool]:
        parts = [ds._fingerprint, tokenizer_fingerprint(self.tokenizer), str(self.max_length), str(self.stride),
                 str(self.label_all_tokens), str(owned_only), tokens, PREPROCESS_VERSION]
        key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]
        cache_file = cache_dir / f"words-{key}.arrow"
        reused = cache_file.exists() if not (num_proc and num_proc > 1) else len(
            list(cache_dir.glob(f"words-{key}_*_of_{num_proc:05d}.arrow"))) == num_proc
        prefix, suffix = special_template(self.tokenizer)
        if self.max_length - len(prefix) - len(suffix) < 2:
            raise DataError(f"preprocessing.max_length: {self.max_length} leaves no room for words")
        encoded = ds.map(
            _encode, batched=True, with_indices=True, remove_columns=ds.column_names, new_fingerprint=key,
            cache_file_name=str(cache_file), load_from_cache_file=True, num_proc=num_proc, desc=description,
            fn_kwargs={"tokenizer": self.tokenizer, "tokens": tokens, "max_length": self.max_length,
                       "stride": self.stride, "owned_only": owned_only, "label_all": self.label_all_tokens,
                       "names": names},
        )
        return encoded, str(cache_file), reused


class WordCollator:
    """Pads each batch to its longest row, labels with -100; the bookkeeping columns stay out of the batch."""

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None):
        from transformers import DataCollatorForTokenClassification

        self.inner = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of,
                                                        return_tensors="pt")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self.inner([{k: f[k] for k in MODEL_KEYS if k in f} for f in features])
