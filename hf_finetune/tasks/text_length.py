"""The max_length a text run tokenizes at: the recipe's, else what the training texts need (data-aware),
capped at what the backbone takes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from hf_finetune.data.sources import load_raw_splits
from hf_finetune.data.text import default_max_length
from hf_finetune.errors import Problem, RecipeError

logger = logging.getLogger(__name__)

LENGTH_QUANTILE = 0.99  # max_length covers this share of training texts (the rest is truncated)
LENGTH_SAMPLE = 2_000  # texts tokenized to measure lengths (seeded sample)
# ...but at most this many tokens unless the recipe asks for more. A training step's cost grows faster
# than its length: all-MiniLM-L6-v2 on BBC News took 1.50 s per step of 8 at 256 tokens and 0.62 s at
# 128 (2.4x; benchmarks/time_budget.py --parts steps), and the 256 bought no macro-F1 on full BBC
# (0.969 at 256 against the example script's 0.973 at 128). 128 is the example script's default and
# the length all-MiniLM-L6-v2 was trained at; longer documents are truncated, which the log says, and
# `preprocessing.max_length` keeps more.
LENGTH_CAP = 128


def resolve_max_length(recipe: Any, tokenizer: Any, model_config: Any) -> int:
    """The recipe's max_length; unset, what the training texts need (data-aware) or the backbone's limit.

    Raises:
        RecipeError: the recipe asks for more than the backbone's limit.
    """
    limit = default_max_length(tokenizer, model_config)
    asked = recipe.preprocessing.max_length
    if asked is not None and asked > limit:
        raise RecipeError(
            [Problem("preprocessing.max_length", f"{asked} exceeds the backbone's limit of {limit} tokens")]
        )
    if asked is not None or not recipe.finetune.data_aware:
        return asked or limit
    local = recipe.model.name if Path(recipe.model.name).is_dir() else None
    chosen, reason = measured_max_length(recipe, tokenizer, backbone_limit(tokenizer, model_config, local))
    logger.info("Default from the data: preprocessing.max_length = %d (%s)", chosen, reason)
    return chosen


def measured_max_length(recipe: Any, tokenizer: Any, limit: int) -> tuple[int, str]:
    """A max_length covering `LENGTH_QUANTILE` of a sample of training texts, capped at `limit` and at
    `LENGTH_CAP`."""
    data = recipe.data
    if data.streaming:  # the head of the training stream: the rest is never read ahead
        from hf_finetune.data.streaming import load_streams, stream_head

        streams = load_streams(data)
        stream = streams[data.splits.train] if data.splits.train in streams else next(iter(streams.values()))
        sample = stream_head(stream, min(LENGTH_SAMPLE, data.head_rows), "data.splits.train", data.splits.train)
    else:
        raw = load_raw_splits(data)
        train = raw[data.splits.train] if data.splits.train in raw else next(iter(raw.values()))
        rng = np.random.default_rng(data.seed)
        rows = rng.choice(len(train), size=min(LENGTH_SAMPLE, len(train)), replace=False)
        sample = train.select(sorted(rows.tolist()))
    if data.columns.tokens:  # sentences given as words (token classification); a longer one becomes windows
        words = [[w if isinstance(w, str) else "" for w in row] for row in sample[data.columns.tokens] if row]
        encoded = tokenizer(words, is_split_into_words=True, truncation=False, verbose=False) if words else {
            "input_ids": []}
    else:
        texts = [t if isinstance(t, str) else "" for t in sample[data.columns.text]]
        pairs = ([p if isinstance(p, str) else "" for p in sample[data.columns.text_pair]]
                 if data.columns.text_pair else None)
        encoded = tokenizer(texts, pairs, truncation=False, verbose=False) if pairs else tokenizer(
            texts, truncation=False, verbose=False)
    lengths = np.array([len(ids) for ids in encoded["input_ids"]])
    covering = int(np.quantile(lengths, LENGTH_QUANTILE)) if len(lengths) else limit
    chosen = min(limit, LENGTH_CAP, max(8, -(-covering // 8) * 8))  # a multiple of 8
    share = float((lengths <= chosen).mean()) if len(lengths) else 1.0
    sampled = f"the first {len(lengths)} training texts of the stream" if data.streaming else \
        f"{len(lengths)} sampled training texts"
    reason = (f"{share:.0%} of {sampled} fit in {chosen} tokens "
              f"({LENGTH_QUANTILE:.0%} quantile {covering}, backbone limit {limit}")
    if chosen == LENGTH_CAP < min(limit, covering):
        reason += (f"; capped at {LENGTH_CAP}: a longer step costs more than it bought on the benchmarks, "
                   "set preprocessing.max_length to keep more of each text")
    reason += ")"
    return chosen, reason


def backbone_limit(tokenizer: Any, model_config: Any, model_dir: str | None) -> int:
    """The longest input worth giving the backbone: its limit, or the length it was trained at when
    its folder says so (sentence-transformers' max_seq_length, e.g. 256 for all-MiniLM-L6-v2)."""
    limit = default_max_length(tokenizer, model_config)
    if model_dir is not None:
        path = Path(model_dir) / "sentence_bert_config.json"
        try:
            trained = json.loads(path.read_text()).get("max_seq_length") if path.is_file() else None
        except (OSError, ValueError):
            trained = None
        if isinstance(trained, int) and 0 < trained < limit:
            limit = trained
    return limit
