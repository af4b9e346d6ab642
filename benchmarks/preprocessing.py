"""Preprocessing: tokenization throughput against the bare tokenizer, and setup time with a warm cache.

    python benchmarks/preprocessing.py [--rows 40000]

1. Tokenization rows/s: hf-finetune's cached, batched `Dataset.map` (what a run does) against
   calling the fast tokenizer directly on the same batches with the same options. Target: ours
   takes at most 1.3x the direct time.
2. Setup time (from the start of `train.run` to the first training step) of a first run, which
   converts the csv files and tokenizes, against a second run of the same recipe, which reuses the
   caches. Target: the second run's setup takes under 20% of the first's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="bench-prep-"))
os.environ["HF_DATASETS_CACHE"] = str(WORK / "datasets-cache")  # a cold cache, before datasets is imported

from common import report, synthetic_texts, write_minilm, write_text_split  # noqa: E402

MAX_LENGTH = 256
BATCH = 1000  # Dataset.map's default batch size


def tokenization(model_dir: Path, rows: int) -> tuple[float, float]:
    from datasets import Dataset
    from transformers import AutoTokenizer

    from hf_finetune.data.text import tokenize_split

    texts = [r["text"] for r in synthetic_texts(rows, seed=3)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    options = {"truncation": True, "max_length": MAX_LENGTH, "return_attention_mask": False,
               "return_token_type_ids": False}
    tokenizer(texts[:BATCH], **options)  # warm up the tokenizer's thread pool
    start = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        tokenizer(texts[i:i + BATCH], **options)
    direct = time.perf_counter() - start

    ds = Dataset.from_dict({"text": texts, "labels": [0] * len(texts)})
    start = time.perf_counter()
    result = tokenize_split(ds, tokenizer, "text", None, MAX_LENGTH, WORK / "tok-cache", num_proc=None,
                            description="tokenizing")
    ours = time.perf_counter() - start
    assert not result.reused_cache and len(result.dataset) == rows
    return rows / ours, rows / direct


def setup_times(model_dir: Path, rows: int) -> tuple[float, float]:
    from hf_finetune.pipeline import run
    from hf_finetune.recipe import validate_recipe

    files = {"train": write_text_split(WORK / "train.csv", rows, seed=4),
             "validation": write_text_split(WORK / "validation.csv", 200, seed=5)}
    recipe = {
        "task": "text-classification",
        "model": {"name": str(model_dir)},
        "data": {"files": {k: str(v) for k, v in files.items()}},
        "preprocessing": {"max_length": MAX_LENGTH},
        "metrics": ["accuracy"],
        "training": {"max_steps": 2, "per_device_train_batch_size": 8, "eval_strategy": "no", "save_strategy": "no",
                     "load_best_model_at_end": False},
        "output": {"dir": str(WORK / "run"), "overwrite": True},
    }
    first = run(validate_recipe(recipe)).metrics["train"]["setup_s"]
    second = run(validate_recipe(recipe)).metrics["train"]["setup_s"]
    return second, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40000, help="rows to tokenize / to train on")
    args = parser.parse_args()
    model_dir = write_minilm(WORK / "minilm")
    ours_rate, direct_rate = tokenization(model_dir, args.rows)
    second, first = setup_times(model_dir, args.rows)
    report("preprocessing", [
        ("tokenization rows/s (direct = baseline)", ours_rate, direct_rate),
        ("setup seconds: warm cache (ours) vs first run", second, first),
    ], extra={"time ours / direct tokenizer (target <= 1.3)": round(direct_rate / ours_rate, 3),
              "second setup / first setup (target < 0.2)": round(second / first, 3),
              "rows": args.rows, "max_length": MAX_LENGTH})


if __name__ == "__main__":
    main()
