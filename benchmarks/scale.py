"""The cost curve: one recipe at 10k, 100k and 1M generated rows, map-style and streamed (data.streaming).

    python benchmarks/scale.py [--rows 10000 100000 1000000] [--modes map stream] [--steps 30]

Each (rows, mode) runs in a fresh process (its own peak RSS, a cold `datasets` cache in its own folder).
The recipe: a tiny BERT (hidden 32, 2 layers), short texts (8-24 words), two classes, batch 32,
max_length 32, `training.max_steps` fixed (--steps), a 1,000-row validation file, no test split.
Figures per run:

- preprocessing s per 1,000 rows: map-style, the pre-flight (which converts the csv to Arrow, cached) plus
  building the data (labels, tokenization, cached) over the training rows; streamed, one full pass over the encoded training stream (csv read, labels and
  tokenization on the fly), timed after training in the same process.
- time to the first step: from the start of the run to the end of the first optimizer step.
- training samples/s: over the steps after the first two.
- peak RSS (MB) of the process, and its growth against the smallest size.
- cache on disk (MB): the `datasets` cache and data.cache_dir after the run (the csv itself not counted).

Targets (#29.2): time per row flat within 20% from the smallest to the largest size; with streaming, peak RSS
growth from 10k to 1M under 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDS = [f"w{i:03d}" for i in range(200)]  # 200 words; words 0-9 mark "pos", 10-19 "neg"


def write_rows(path: Path, n: int, seed: int) -> Path:
    """n rows of short texts (8-24 words), written in chunks (1M rows never sit in memory)."""
    import csv

    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for _ in range(n):
            label = rng.randint(0, 1)
            words = [WORDS[rng.randrange(20, 200)] for _ in range(rng.randint(8, 24))]
            words[rng.randrange(len(words))] = WORDS[rng.randrange(10) + (0 if label else 10)]
            writer.writerow([" ".join(words), "pos" if label else "neg"])
    return path


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.exists() else 0.0


def child(rows: int, mode: str, steps: int, data_dir: Path, work: Path) -> dict:
    """One run in this process; returns its figures."""
    os.environ["HF_DATASETS_CACHE"] = str(work / "datasets-cache")  # before datasets is imported
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    from common import add_callback_to_every_trainer, peak_rss_mb
    from transformers import TrainerCallback

    from hf_finetune import load_recipe
    from hf_finetune.pipeline import run
    from hf_finetune.testing import write_tiny_bert

    model = write_tiny_bert(work / "tiny-bert", WORDS)
    recipe = {
        "task": "text-classification", "model": {"name": str(model)},
        "data": {"files": {"train": str(data_dir / f"train-{rows}.csv"), "validation": str(data_dir / "validation.csv")},
                 "splits": {"test": None}, "cache_dir": str(work / "token-cache")},
        "preprocessing": {"max_length": 32},
        "finetune": {"data_aware": False},
        "training": {"max_steps": steps, "per_device_train_batch_size": 32, "per_device_eval_batch_size": 256,
                     "learning_rate": 1e-3, "eval_strategy": "no", "save_strategy": "no",
                     "load_best_model_at_end": False, "logging_steps": 10, "bf16": False},
        "output": {"dir": str(work / "out")},
    }
    if mode == "stream":
        recipe["data"].update(streaming=True, shuffle_buffer=10_000)
        recipe["data"].pop("cache_dir")
    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.setdefault(f"step{state.global_step}", time.perf_counter())

    add_callback_to_every_trainer(Clock())
    import hf_finetune.pipeline as pipeline

    def timed(name: str):  # wraps pipeline.<name>, adding its seconds to marks["data_s"]
        original = getattr(pipeline, name)

        def wrapper(*args, **kwargs):
            begin = time.perf_counter()
            out = original(*args, **kwargs)
            marks["data_s"] = marks.get("data_s", 0.0) + time.perf_counter() - begin
            return out

        setattr(pipeline, name, wrapper)

    # map-style: the pre-flight converts the csv to Arrow (cached, reused by training), build_datasets tokenizes
    timed("preflight")
    timed("build_datasets")
    started = time.perf_counter()
    run(load_recipe(recipe))
    first_step = marks["step1"] - started
    timed = [marks[f"step{s}"] for s in range(2, steps + 1)]
    samples_per_s = 32 * (len(timed) - 1) / (timed[-1] - timed[0])
    if mode == "map":
        prep_s = marks["data_s"]
    else:  # one pass over the encoded training stream, as training reads it
        from hf_finetune.data.encodings import TextEncoding
        from hf_finetune.data.labels import ClassLabeling
        from hf_finetune.data.streaming import build_streaming_datasets
        from hf_finetune.models.backbones import build_tokenizer

        r = load_recipe(recipe)
        begin = time.perf_counter()
        splits, *_ = build_streaming_datasets(r, TextEncoding(build_tokenizer(r.model), 32), ClassLabeling())
        read = sum(1 for _ in splits["train"])
        prep_s = time.perf_counter() - begin
        assert read == rows, (read, rows)
    return {"rows": rows, "mode": mode, "prep_s_per_1k": 1000 * prep_s / rows, "prep_s": prep_s,
            "first_step_s": first_step, "train_samples_per_s": samples_per_s, "peak_rss_mb": peak_rss_mb(),
            "cache_mb": folder_mb(work / "datasets-cache") + folder_mb(work / "token-cache")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--modes", nargs="+", default=["map", "stream"], choices=["map", "stream"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "hf-finetune-scale-data")
    parser.add_argument("--child", nargs=3, metavar=("ROWS", "MODE", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rows, mode, work = int(args.child[0]), args.child[1], Path(args.child[2])
        print("RESULT " + json.dumps(child(rows, mode, args.steps, args.data, work)))
        return
    if not (args.data / "validation.csv").exists():
        write_rows(args.data / "validation.csv", 1000, seed=1)
    results = []
    for rows in args.rows:
        if not (args.data / f"train-{rows}.csv").exists():
            write_rows(args.data / f"train-{rows}.csv", rows, seed=0)
        for mode in args.modes:
            work = Path(tempfile.mkdtemp(prefix=f"scale-{mode}-{rows}-"))
            done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--data", str(args.data),
                                   "--child", str(rows), mode, str(work)], capture_output=True, text=True)
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode != 0 or not line:
                sys.exit(f"{mode} at {rows} rows failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(line[0][len("RESULT "):]))
            print(json.dumps(results[-1]), flush=True)
    sys.path.insert(0, str(HERE))
    from common import machine

    base = {r["mode"]: r for r in results if r["rows"] == min(args.rows)}
    print(f"\n== scale ==  ({machine()}, {time.strftime('%Y-%m-%d', time.gmtime())}, {args.steps} steps of 32)")
    print("| rows | mode | preprocessing s / 1k rows | time to first step (s) | training samples/s | peak RSS (MB) "
          "| RSS growth (MB) | cache on disk (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        growth = r["peak_rss_mb"] - base[r["mode"]]["peak_rss_mb"]
        print(f"| {r['rows']:,} | {r['mode']} | {r['prep_s_per_1k']:.3f} | {r['first_step_s']:.1f} | "
              f"{r['train_samples_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {growth:+.0f} | {r['cache_mb']:.1f} |")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
