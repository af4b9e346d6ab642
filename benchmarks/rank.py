"""Does `hf-finetune rank` order backbones the way fine-tuning them does? And how much sooner does it answer?

    python benchmarks/rank.py --task digits       # EfficientNet-Lite0/1/2 + a random-init Lite0, digits 10/class
    python benchmarks/rank.py --task bbc          # all-MiniLM-L6-v2 + a random-init BERT of its shape, BBC 16/class

Each task ranks its candidates once (fresh feature cache: the time includes every extraction), then
fine-tunes every candidate with the same recipe (`hf_finetune.train`, data-aware defaults except the
settings named below), and reports for each score the weighted Kendall tau (scipy.stats.weightedtau,
hyperbolic weights on rank, as the LogME paper uses) between the score and the fine-tuned test
accuracy (and test macro-F1), and the time of ranking against the time of fine-tuning them all.
Few-label fine-tuning is itself noisy (a few points of accuracy between seeds): `--seeds N` fine-tunes
each candidate N times and compares with the mean.

To fit a run in under 10 minutes on 2 CPU cores, the fine-tuning is short and the images small:
    digits   every candidate's data config is kept (mean, std, crop, interpolation) except the input
             size, set to --image-size (default 128 px; the digits are 32 px originals); 100 training
             images; --epochs (default 12) without evaluation during training, the final model scored
    bbc      max_length --max-length (default 128), --epochs (default 3), 80 training articles
Ranking and fine-tuning see exactly the same preprocessing, so the comparison is fair, but the
absolute accuracies are below what full-resolution, longer fine-tuning reaches.

With two candidates (bbc), tau is +1 or -1: it only says whether the pair is ordered right.
Results are appended to benchmarks/results/rank.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import real_assets
from common import REPO, machine

RESULTS = REPO / "benchmarks" / "results" / "rank.json"
SCORES = ("logme", "knn", "probe", "hscore")
logger = logging.getLogger("rank-bench")


def weighted_tau(scores: list[float], truth: list[float]) -> float:
    from scipy.stats import weightedtau

    return float(weightedtau(scores, truth).statistic)


def small_lite(n: int, size: int, work: Path) -> Path:
    """A copy of the EfficientNet-Lite`n` folder whose data config asks for `size` px inputs."""
    source = real_assets.efficientnet_lite_dir(n)
    target = work / f"tf_efficientnet_lite{n}-{size}px"
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["pretrained_cfg"]["input_size"] = [3, size, size]
    config["pretrained_cfg"].pop("test_input_size", None)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target


def digits_task(work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    folder = real_assets.digits_folder(per_class=10)
    models = [small_lite(n, args.image_size, work) for n in (0, 1, 2)]
    candidates = [{"name": str(m)} for m in models] + [{"name": str(models[0]), "pretrained": False}]
    recipe = {"task": "image-classification", "model": {"name": str(models[0])},
              "data": {"image_folder": str(folder), "cache_dir": str(work / "cache")},
              "training": {"num_train_epochs": args.epochs, "eval_strategy": "no", "save_strategy": "no",
                           "load_best_model_at_end": False, "per_device_eval_batch_size": 64}}
    return recipe, candidates


def bbc_task(work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    files = real_assets.bbc_news("few", per_class=16)
    minilm = str(real_assets.minilm_dir())
    candidates = [{"name": minilm}, {"name": minilm, "pretrained": False}]
    recipe = {"task": "text-classification", "model": {"name": minilm},
              "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(work / "cache")},
              "preprocessing": {"max_length": args.max_length},
              "training": {"num_train_epochs": args.epochs, "eval_strategy": "no", "save_strategy": "no",
                           "load_best_model_at_end": False, "per_device_eval_batch_size": 64}}
    return recipe, candidates


def fine_tune(recipe: dict[str, Any], candidate: dict[str, Any], out: Path, seeds: int) -> dict[str, Any]:
    """Fine-tunes one candidate with seeds 42, 43, ...; test and validation figures are means over seeds."""
    import numpy as np

    import hf_finetune

    started = time.perf_counter()
    runs = []
    for seed in range(42, 42 + seeds):
        training = {**recipe["training"], "seed": seed}
        result = hf_finetune.train({**recipe, "model": candidate, "training": training,
                                    "output": {"dir": str(out), "overwrite": True}})
        runs.append(result.metrics)
    out_record: dict[str, Any] = {"wall_s": time.perf_counter() - started, "seeds": seeds}
    for split in ("validation", "test"):
        out_record[split] = {k: float(np.mean([m[split][k] for m in runs])) for k in ("accuracy", "f1")}
        out_record[f"{split}_per_seed"] = [{k: m[split][k] for k in ("accuracy", "f1")} for m in runs]
    out_record["epochs"], out_record["steps"] = runs[0]["train"]["epochs"], runs[0]["train"]["steps"]
    return out_record


def run_task(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from hf_finetune.rank import rank
    from hf_finetune.rank.report import format_table
    from hf_finetune.recipe import validate_recipe

    work = Path(tempfile.mkdtemp(prefix=f"rank-{name}-"))
    try:
        recipe, candidates = (digits_task if name == "digits" else bbc_task)(work, args)
        validated = validate_recipe({**recipe, "rank": {"hscore": True},
                                     "output": {"dir": str(work / "out")}}, source=f"benchmarks/rank.py:{name}")
        started = time.perf_counter()
        ranked = rank(validated, candidates)
        rank_s = time.perf_counter() - started
        print(format_table(ranked.record), flush=True)
        tuned = {}
        for index, candidate in enumerate(candidates):
            label = candidate["name"] if candidate.get("pretrained", True) else f"{candidate['name']} (random init)"
            tuned[label] = fine_tune(recipe, candidate, work / f"ft{index}", args.seeds)
            logger.info("fine-tuned %s: test accuracy %.3f F1 %.3f in %.0fs", label, tuned[label]["test"]["accuracy"],
                        tuned[label]["test"]["f1"], tuned[label]["wall_s"])
        rows = {r["name"]: r for r in ranked.rows}
        names = list(tuned)
        taus = {}
        for score in SCORES:
            values = [rows[n]["scores"][score] for n in names]
            taus[score] = {metric: weighted_tau(values, [tuned[n]["test"][metric] for n in names])
                           for metric in ("accuracy", "f1")}
        finetune_s = sum(t["wall_s"] for t in tuned.values())
        return {"settings": {k: getattr(args, k) for k in ("image_size", "epochs", "max_length", "seeds")},
                "candidates": {n: {"scores": rows[n]["scores"], "dim": rows[n]["dim"],
                                   "extraction_s": rows[n]["extraction_s"], "fine_tuned": tuned[n]} for n in names},
                "weighted_tau": taus, "rank_s": rank_s, "finetune_s": finetune_s,
                "time_ratio": rank_s / finetune_s, "winner": ranked.winner,
                "best_fine_tuned": max(names, key=lambda n: tuned[n]["test"]["accuracy"])}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(name: str, result: dict[str, Any]) -> str:
    short = {n: Path(n.split(" ")[0]).name + (" (random init)" if n.endswith("(random init)") else "")
             for n in result["candidates"]}
    lines = [f"## {name}", "candidate | LogME | k-NN acc | probe acc | H-score | fine-tuned test acc | F1 | fine-tune s"]
    for n, c in result["candidates"].items():
        s, t = c["scores"], c["fine_tuned"]
        lines.append(f"{short[n]} | {s['logme']:.4f} | {s['knn']:.3f} | {s['probe']:.3f} | {s['hscore']:.2f} | "
                     f"{t['test']['accuracy']:.3f} | {t['test']['f1']:.3f} | {t['wall_s']:.0f}")
    for score, tau in result["weighted_tau"].items():
        lines.append(f"weighted tau {score:6s} vs test accuracy {tau['accuracy']:+.3f}, vs test F1 {tau['f1']:+.3f}")
    lines.append(f"ranking {result['rank_s']:.0f}s vs fine-tuning all {result['finetune_s']:.0f}s: "
                 f"ratio {result['time_ratio']:.3f}; rank winner {short[result['winner']]}, "
                 f"best fine-tuned {short[result['best_fine_tuned']]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["digits", "bbc"], required=True)
    parser.add_argument("--image-size", type=int, default=128, help="digits: input size of every candidate (px)")
    parser.add_argument("--epochs", type=float, default=None, help="fine-tuning epochs (digits 12, bbc 3)")
    parser.add_argument("--max-length", type=int, default=128, help="bbc: max tokens")
    parser.add_argument("--seeds", type=int, default=1, help="fine-tune each candidate with this many seeds "
                                                               "(42, 43, ...) and compare with the mean accuracy")
    args = parser.parse_args()
    if args.epochs is None:
        args.epochs = 12 if args.task == "digits" else 3
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run_task(args.task, args)
    record = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    record["machine"] = machine()
    record.setdefault("tasks", {})[args.task] = {**result, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(summarize(args.task, result), flush=True)


if __name__ == "__main__":
    main()
