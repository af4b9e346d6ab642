"""Self-training on real assets: what the unlabelled pool adds over training on the few labels alone.

    python benchmarks/self_training.py --task bbc-8                   # BBC News, 8 labels per topic
    python benchmarks/self_training.py --task bbc-16 --threshold 0.7
    python benchmarks/self_training.py --task digits-10 --pool 300    # digits, 10 labels per class

Tasks (assets from benchmarks/real_assets.py, cached):
    bbc-8, bbc-16   all-MiniLM-L6-v2 on BBC News (5 topics), 8 or 16 labelled articles per topic; the
                    pool is the rest of the training split (`real_assets.bbc_pool`), its labels used
                    only to score the pseudo-labels; the held-out validation (318) and test (318) splits
    digits-10       EfficientNet-Lite0 (ImageNet) on scikit-learn's digits, 10 labelled images per
                    class; the pool is the rest of the training split (`real_assets.digits_pool`)

One `hf_finetune.train` run per invocation, with `self_training.score_test_each_round: true`: its
round 0 is the labelled-only baseline (the same recipe, settings and seed, before any
pseudo-label), so the gain is measured in the same run. Printed per round: training rows,
pseudo-labels kept, their accuracy against the pool's hidden labels, validation and test accuracy
and macro-F1; then the teacher's threshold curve (kept rows and their accuracy at thresholds
0.5..0.99, from the same predictions). Results are appended to benchmarks/results/self_training.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import real_assets
from common import REPO, machine

RESULTS = REPO / "benchmarks" / "results" / "self_training.json"
logger = logging.getLogger("self_training")


def recipe_for(task: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    st = {"rounds": args.rounds, "threshold": args.threshold, "init": args.init, "score_test_each_round": True}
    if args.share is not None:
        st["max_class_share"] = args.share
    training: dict[str, Any] = {"save_total_limit": 1}
    if args.epochs is not None:
        training["num_train_epochs"] = args.epochs
    if task.startswith("bbc-"):
        per_class = int(task.split("-")[1])
        files = real_assets.bbc_news("few", per_class)
        data = {"files": {k: str(v) for k, v in files.items()},
                "unlabeled": {"files": str(real_assets.bbc_pool(per_class)), "max_samples": args.pool}}
        recipe = {"task": "text-classification", "model": {"name": str(real_assets.minilm_dir())},
                  "preprocessing": {"max_length": args.max_length}}
    elif task == "digits-10":
        data = {"image_folder": str(real_assets.digits_folder(10)),
                "unlabeled": {"files": str(real_assets.digits_pool(10)), "max_samples": args.pool}}
        recipe = {"task": "image-classification", "model": {"name": str(real_assets.efficientnet_lite_dir(0))}}
    else:
        raise SystemExit(f"unknown task {task}; use bbc-8, bbc-16 or digits-10")
    data["cache_dir"] = str(work / "cache")
    return {**recipe, "data": data, "self_training": st, "training": training,
            "output": {"dir": str(work / "out"), "overwrite": True}}


def table(st: dict[str, Any]) -> list[str]:
    head = "| round | training rows | kept (of pool) | pseudo-label acc | pool acc | val acc | val F1 | test acc | test F1 | s |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in st["rounds"]:
        v, t = r.get("validation") or {}, r.get("test") or {}

        def f(x: Any) -> str:
            return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

        mark = " (kept)" if r.get("selected") else ""
        lines.append(f"| {r['round']}{mark} | {f(r.get('train_rows')) if r.get('trained') else 'not trained'} | "
                     f"{r.get('kept', 0)} of {r.get('pool_rows')} | {f(r.get('pseudo_label_accuracy'))} | "
                     f"{f(r.get('pool_accuracy'))} | {f(v.get('accuracy'))} | {f(v.get('f1'))} | "
                     f"{f(t.get('accuracy'))} | {f(t.get('f1'))} | {f(r.get('seconds'))} |")
    return lines


def curve(st: dict[str, Any]) -> list[str]:
    lines = []
    for r in st["rounds"][1:]:
        points = ", ".join(f"{p['threshold']}: {p['kept']}" + (f" @ {p['accuracy']:.3f}" if p.get("accuracy") is not None
                                                              else "") for p in r["threshold_curve"])
        lines.append(f"round {r['round']} teacher, kept @ pseudo-label accuracy per threshold: {points}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, choices=["bbc-8", "bbc-16", "digits-10"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--share", type=float, default=None, help="self_training.max_class_share")
    parser.add_argument("--init", default="backbone", choices=["backbone", "continue"])
    parser.add_argument("--pool", type=int, default=None, help="data.unlabeled.max_samples (subsampled pool)")
    parser.add_argument("--epochs", type=float, default=None, help="training.num_train_epochs (default: data-aware)")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("hf_finetune.selftrain").setLevel(logging.INFO)
    import hf_finetune

    with tempfile.TemporaryDirectory(prefix="selftrain-bench-") as tmp:
        work = Path(tmp)
        recipe = recipe_for(args.task, work, args)
        started = time.perf_counter()
        result = hf_finetune.train(recipe)
        wall = time.perf_counter() - started
        metrics = result.metrics
    st = metrics["self_training"]
    base, best = st["rounds"][0], st["rounds"][st["best_round"]]
    gain = {k: best["test"][k] - base["test"][k] for k in ("accuracy", "f1")}
    settings = {k: v for k, v in vars(args).items()}
    print(f"\n{args.task}: {settings}; {machine()}; wall {wall:.0f} s")
    print("\n".join(table(st)))
    print("\n".join(curve(st)))
    print(f"best round {st['best_round']} ({st['stopped']}); test gain over round 0 (labelled only): "
          f"accuracy {gain['accuracy']:+.3f}, macro-F1 {gain['f1']:+.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    runs.append({"task": args.task, "settings": settings, "machine": machine(), "wall_s": round(wall, 1),
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "self_training": st,
                 "final_test": {k: metrics["test"][k] for k in ("accuracy", "f1")}, "test_gain": gain})
    RESULTS.write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
