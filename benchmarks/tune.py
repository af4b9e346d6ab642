"""Hyperparameter search (`hf-finetune tune`) on real data: does a search beat the defaults, and what does pruning save?

    flock -x /tmp/hf-cpu.lock python benchmarks/tune.py --part search    # default run, then a 3x-budget search
    flock -x /tmp/hf-cpu.lock python benchmarks/tune.py --part pruning   # the same search without pruning
    flock -x /tmp/hf-cpu.lock python benchmarks/tune.py --part memory    # host RSS over 12 tiny trials

Tasks (`--task`): all-MiniLM-L6-v2 on BBC News: `bbc-imbalanced` (64/32/16/8/4 rows per class, 124
rows; the default), `bbc-few` (16 per class), `bbc-imbalanced-80` (320/160/80/40/20), `bbc-full`
(1,491 rows), with the fixed validation and test splits (benchmarks/real_assets.py), as in
benchmarks/quality.py; `vader` (sentiment that is not topics: VADER's human-rated tweets and review and
editorial snippets, benchmarks/regression.py's 150/50/150 per source split, labelled negative / neutral /
positive by mean rating as benchmarks/few_label.py does, ambiguous ratings left out: about 480 training
rows in their natural, imbalanced class mix); and `digits` (EfficientNet-Lite0 at 128 px, 30 training images per digit of
scikit-learn's digits, as benchmarks/rank.py). So that each part fits in 10 minutes on 2 CPU cores, both systems use
`preprocessing.max_length: 128` (quality.py measured no F1 difference from 256 on this task) and
160 of the 318 validation rows (seeded sample; model selection only); test keeps all 318 rows.

    default   `hf_finetune.train` with the recipe naming only model, data, max_length and output: every
              other value is the data-aware default (epochs, learning rates, warmup, class weights, F1
              selection)
    search    `tune` with the default space, TPE (seed 42) and successive halving, with a wall-time budget
              of 3x the default run's wall time (`--timeout`); trials are selected on validation macro-F1,
              and the best trial's test figures are reported (test plays no part in the choice)
    pruning   the same search (space, sampler, seed, wall-time budget as the search part) with
              `search.pruner.type: none`: trials explored in the budget, time per trial, share pruned

Results go to benchmarks/results/tune.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import real_assets
import yaml
from common import REPO, machine

RESULTS = REPO / "benchmarks" / "results" / "tune.json"
BUDGET_FACTOR = 3.0
MAX_LENGTH = 128
VALIDATION_ROWS = 160  # of 318: evaluating every epoch costs as much as training on 124 rows

logger = logging.getLogger("tune-benchmark")


# Text tasks: BBC regime and per-class count (benchmarks/real_assets.py), all-MiniLM-L6-v2.
BBC_TASKS = {"bbc-imbalanced": ("imbalanced", 16), "bbc-few": ("few", 16), "bbc-imbalanced-80": ("imbalanced", 80),
             "bbc-full": ("full", 16)}
TASKS = [*BBC_TASKS, "vader", "digits"]
DIGITS_PER_CLASS = 30  # training images per digit (300); validation and test are the full held-out splits
DIGITS_SIZE = 128  # px, as benchmarks/rank.py: every EfficientNet-Lite0 data config value but the input size


def recipe(work: Path, task: str = "bbc-imbalanced") -> dict[str, Any]:
    if task == "digits":
        from rank import small_lite

        return {"task": "image-classification", "model": {"name": str(small_lite(0, DIGITS_SIZE, work))},
                "data": {"image_folder": str(real_assets.digits_folder(DIGITS_PER_CLASS)),
                         "cache_dir": str(work / "cache")}}
    if task == "vader":
        files = vader_sentiment()
    else:
        regime, per_class = BBC_TASKS[task]
        files = real_assets.bbc_news(regime, per_class=per_class)
    return {"task": "text-classification", "model": {"name": str(real_assets.minilm_dir())},
            "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(work / "cache"),
                     "max_samples": {"validation": VALIDATION_ROWS}},
            "preprocessing": {"max_length": MAX_LENGTH}}


def vader_sentiment() -> dict[str, Path]:
    """text,label CSVs: regression.vader()'s splits, each rating banded as few_label._sentiment (None dropped)."""
    import few_label
    import regression

    rated = regression.vader()
    final = real_assets.cache_dir() / real_assets.LAYOUT_VERSION / "data" / f"vader-sentiment-{rated['train'].parent.name}"

    def make(tmp: Path) -> None:
        for split, path in rated.items():
            texts, ratings = regression.read(path)
            rows = [(t, few_label._sentiment(float(r))) for t, r in zip(texts, ratings, strict=True)]
            few_label._write(tmp / f"{split}.csv", [(t, y) for t, y in rows if y is not None])

    real_assets._build(final, make)
    return {split: final / f"{split}.csv" for split in ("train", "validation", "test")}


def figures(metrics: dict[str, Any]) -> dict[str, Any]:
    return {split: {k: metrics[split][k] for k in ("accuracy", "f1")} for split in ("validation", "test")}


def default_run(base: dict[str, Any], work: Path) -> dict[str, Any]:
    import hf_finetune

    started = time.perf_counter()
    result = hf_finetune.train({**base, "output": {"dir": str(work / "default")}})
    wall = time.perf_counter() - started
    resolved = yaml.safe_load((result.output_dir / "recipe.yaml").read_text())
    return {**figures(result.metrics), "wall_s": wall, "epochs": result.metrics["train"]["epochs"],
            "learning_rate": resolved["training"]["learning_rate"],
            "head_learning_rate": resolved["finetune"].get("head_learning_rate"),
            "class_weights": resolved["finetune"].get("class_weights") is not None}


def search(base: dict[str, Any], work: Path, name: str, *, timeout: float | None, trials: int,
           pruner: str) -> dict[str, Any]:
    from hf_finetune.search.tune import tune

    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**base, "output": {"dir": str(work / name)},
                                    "search": {"pruner": {"type": pruner}}}, sort_keys=False))
    started = time.perf_counter()
    result = tune(path, [], trials=trials, timeout=timeout)
    wall = time.perf_counter() - started
    with open(result.out_dir / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, Any] = {"wall_s": wall, "trials": len(rows), "states": result.states,
                           "pruned_share": result.states.get("pruned", 0) / max(1, len(rows)),
                           "trial_seconds": [float(r["duration_s"] or 0) for r in rows],
                           "best_params": result.best_params, "best_validation_f1": result.best_value}
    if result.best_dir is not None:
        best = json.loads((result.best_dir / "metrics.json").read_text())
        out.update(figures(best))
    return out


def memory(work: Path, trials: int = 12) -> dict[str, Any]:
    """Host RSS after each of `trials` tiny trials (tiny BERT, 48 rows): does memory grow across trials?"""
    from hf_finetune.search.tune import tune
    from hf_finetune.testing import write_tiny_bert

    words = ["good", "great", "bad", "awful", "the", "movie", "was", "film"]
    model = write_tiny_bert(work / "tiny-bert", words)
    rows = [{"text": f"the movie was {w}", "label": "pos" if w in ("good", "great") else "neg"}
            for w in ("good", "great", "bad", "awful") * 12]
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        with open(data / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    path = work / "memory.yaml"
    path.write_text(yaml.safe_dump({
        "task": "text-classification", "model": {"name": str(model)},
        "data": {"files": {s: str(data / f"{s}.csv") for s in ("train", "validation", "test")},
                 "cache_dir": str(work / "cache")},
        "training": {"per_device_train_batch_size": 16, "logging_steps": 1},
        "search": {"space": {"training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                             "training.num_train_epochs": {"low": 1, "high": 2}},
                   "pruner": {"type": "none"}},
        "output": {"dir": str(work / "memory")}}, sort_keys=False))
    tune(path, [], trials=trials)
    with open(work / "memory" / "trials.csv", newline="") as f:
        rss = [float(r["host_rss_mb"]) for r in csv.DictReader(f)]
    return {"trials": len(rss), "rss_mb": rss, "first_mb": rss[0], "last_mb": rss[-1],
            "growth_after_trial_3_mb": rss[-1] - rss[2], "max_mb": max(rss)}


def _key(part: str, task: str) -> str:
    """Where a part's result is kept in tune.json (the first task's results keep their old keys)."""
    return part if part == "memory" or task == "bbc-imbalanced" else f"{part}:{task}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["search", "pruning", "memory"], required=True)
    parser.add_argument("--task", choices=TASKS, default="bbc-imbalanced",
                        help="the data (search and pruning parts); results are kept per task")
    parser.add_argument("--budget-factor", type=float, default=BUDGET_FACTOR,
                        help="search wall time = this x the default run's (default 3)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    record = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    record.setdefault("runs", {})
    work = Path(tempfile.mkdtemp(prefix=f"tune-bench-{args.part}-"))
    try:
        base = recipe(work, args.task) if args.part != "memory" else {}
        if args.part == "search":
            default = default_run(base, work)
            found = search(base, work, "search", timeout=args.budget_factor * default["wall_s"], trials=100,
                           pruner="successive_halving")
            result = {"default": default, "search": found, "budget_factor": args.budget_factor,
                      "search_time_ratio": found["wall_s"] / default["wall_s"]}
            lines = [f"default: test acc {default['test']['accuracy']:.3f} F1 {default['test']['f1']:.3f} | val F1 "
                     f"{default['validation']['f1']:.3f} | {default['wall_s']:.0f}s",
                     f"search:  test acc {found.get('test', {}).get('accuracy', float('nan')):.3f} F1 "
                     f"{found.get('test', {}).get('f1', float('nan')):.3f} | val F1 {found['best_validation_f1']:.3f} | "
                     f"{found['wall_s']:.0f}s = {result['search_time_ratio']:.2f}x default | {found['trials']} trials "
                     f"{found['states']} | best {found['best_params']}"]
        elif args.part == "pruning":
            earlier = record["runs"].get(_key("search", args.task))
            if earlier is None:
                raise SystemExit("run --part search first: this part repeats its search without pruning")
            pruned = earlier["search"]
            budget = earlier["budget_factor"] * earlier["default"]["wall_s"]
            # The same search and the same wall-time budget without pruning (running the same number of
            # trials unpruned would not fit in one 10-minute invocation here).
            off = search(base, work, "search", timeout=budget, trials=100, pruner="none")
            per_on = pruned["wall_s"] / pruned["trials"]
            per_off = off["wall_s"] / off["trials"]
            result = {"budget_s": budget, "pruning_on": pruned, "pruning_off": off,
                      "seconds_per_trial": {"on": per_on, "off": per_off}, "time_saved_per_trial": 1 - per_on / per_off}
            lines = [f"pruning on:  {pruned['trials']} trials in {pruned['wall_s']:.0f}s ({per_on:.0f}s per trial), "
                     f"{pruned['pruned_share']:.0%} pruned, best val F1 {pruned['best_validation_f1']:.3f}, "
                     f"test F1 {pruned.get('test', {}).get('f1', float('nan')):.3f}",
                     f"pruning off: {off['trials']} trials in {off['wall_s']:.0f}s ({per_off:.0f}s per trial), best val "
                     f"F1 {off['best_validation_f1']:.3f}, test F1 {off.get('test', {}).get('f1', float('nan')):.3f}",
                     f"time saved per trial by pruning: {result['time_saved_per_trial']:.0%}; trials explored in the "
                     f"same budget: {pruned['trials']} vs {off['trials']}"]
        else:
            result = memory(work)
            lines = [f"host RSS over {result['trials']} trials: first {result['first_mb']:.0f} MiB, last "
                     f"{result['last_mb']:.0f} MiB, max {result['max_mb']:.0f} MiB, growth after trial 3 "
                     f"{result['growth_after_trial_3_mb']:+.0f} MiB"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record["machine"] = machine()
    command = f"flock -x /tmp/hf-cpu.lock python benchmarks/tune.py --part {args.part}"
    if args.part != "memory":
        command += f" --task {args.task}"
    record["runs"][_key(args.part, args.task)] = {**result, "task": args.task, "command": command,
                                                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
