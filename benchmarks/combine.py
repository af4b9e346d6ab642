"""Ensembles, soups and distillation on real data, each beside the best single run of the same run set.

    flock -x /tmp/hf-cpu.lock python benchmarks/combine.py --part seeds     # 3 seeds: logit ensemble, soups
    flock -x /tmp/hf-cpu.lock python benchmarks/combine.py --part sweep     # 3 learning rates, one seed: soups
    flock -x /tmp/hf-cpu.lock python benchmarks/combine.py --part distill   # student alone vs from the ensemble

Task: all-MiniLM-L6-v2 on BBC News, 16 labelled articles per topic (80 training rows, 5 topics), the
shared 318-row validation and test splits (benchmarks/real_assets.py). Every member is our pipeline at
its defaults except a shorter budget so that each part fits in 10 minutes on 2 CPU cores:
`training.num_train_epochs` (default 5 here; the data-aware default would pick 10) and
`preprocessing.max_length: 128` (quality.py measured no loss against 256 on BBC).

    seeds    members: training.seed 1, 2, 3. Compared: the best member (by validation, as a user would
             pick it, and by test, the oracle), the logit ensemble (uniform), the uniform soup and the
             greedy soup. Seeds also change the new head's initialisation, which soups average.
    sweep    members: one seed, head and backbone learning rates x0.5, x1, x2 of the default (the
             paper's setting: one initialisation, several hyperparameters). Compared as for seeds.
    distill  the teacher: the seeds ensemble (3 x MiniLM-L6). The student: MiniLM's first 2 of 6
             layers (the pretrained embeddings and layers 0-1, loaded with num_hidden_layers=2).
             Student alone vs distilled (distill.alpha 0.5, temperature 2), the same recipe, seed and
             budget otherwise; parameters and CPU latency (318 test texts, batch 32) of student vs teacher.

Runs are kept in benchmarks/results/combine-work/ so that `distill` reuses the seeds; results are
appended to benchmarks/results/combine.json and printed as a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import real_assets
from common import REPO, machine

RESULTS = REPO / "benchmarks" / "results" / "combine.json"
WORK = REPO / "benchmarks" / "results" / "combine-work"
DEFAULT_LR = 1e-4  # what the data-aware default gives MiniLM-L6 (22M parameters): backbone 1e-4, head 1e-3

logger = logging.getLogger("combine")


def base_recipe(epochs: float) -> dict[str, Any]:
    files = real_assets.bbc_news("few", per_class=16)
    return {"task": "text-classification", "model": {"name": str(real_assets.minilm_dir())},
            "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(WORK / "cache")},
            "preprocessing": {"max_length": 128},
            "training": {"num_train_epochs": epochs, "save_total_limit": 1}}


def train(name: str, recipe: dict[str, Any], **values: Any) -> dict[str, Any]:
    import hf_finetune

    out = WORK / name
    recipe = {**recipe, "output": {"dir": str(out), "overwrite": True}}
    started = time.perf_counter()
    result = hf_finetune.train(recipe, **values)
    m = result.metrics
    return {"dir": str(out), "wall_s": time.perf_counter() - started, **scores(m)}


def scores(m: dict[str, Any]) -> dict[str, Any]:
    return {role: {k: m[role][k] for k in ("accuracy", "f1")} for role in ("validation", "test")}


def combine(name: str, members: list[str], method: str) -> dict[str, Any]:
    from hf_finetune.combine.ensemble import build_ensemble
    from hf_finetune.combine.soup import build_soup

    started = time.perf_counter()
    out = WORK / name
    if method == "logits":
        result = build_ensemble(out, members, overwrite=True)
    else:
        result = build_soup(out, members, method=method, overwrite=True)
    row = {"dir": str(out), "wall_s": time.perf_counter() - started, **scores(result.metrics),
           "members": {k: scores(v) for k, v in result.metrics["members"].items()}}
    if "soup" in result.metrics:
        row["ingredients"] = result.metrics["soup"]["ingredients"]
    return row


def compare(runs: dict[str, dict[str, Any]], combos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Best single run by validation (what a user would keep) and by test (an oracle), beside each combination."""
    by_val = max(runs, key=lambda n: runs[n]["validation"]["f1"])
    by_test = max(runs, key=lambda n: runs[n]["test"]["f1"])
    out = {"best_by_validation": {"run": by_val, **runs[by_val]}, "best_by_test": {"run": by_test, **runs[by_test]}}
    for name, row in combos.items():
        out[name] = {**row, "test_f1_vs_best_by_validation": row["test"]["f1"] - runs[by_val]["test"]["f1"],
                     "validation_f1_vs_best": row["validation"]["f1"] - runs[by_val]["validation"]["f1"]}
    return out


def part_seeds(epochs: float) -> dict[str, Any]:
    recipe = base_recipe(epochs)
    runs = {f"seed{s}": train(f"seed{s}", recipe, training__seed=s) for s in (1, 2, 3)}
    members = [runs[n]["dir"] for n in runs]
    combos = {"ensemble": combine("seeds-ensemble", members, "logits"),
              "soup": combine("seeds-soup", members, "soup"),
              "greedy_soup": combine("seeds-greedy-soup", members, "greedy-soup")}
    return {"runs": runs, **compare(runs, combos)}


def part_sweep(epochs: float) -> dict[str, Any]:
    recipe = base_recipe(epochs)
    runs = {}
    for scale in (0.5, 1.0, 2.0):
        lr = DEFAULT_LR * scale
        runs[f"lr{lr:g}"] = train(f"lr{lr:g}", recipe, training__seed=7, training__learning_rate=lr,
                                  finetune__head_learning_rate=10 * lr)
    members = [runs[n]["dir"] for n in runs]
    combos = {"ensemble": combine("sweep-ensemble", members, "logits"),
              "soup": combine("sweep-soup", members, "soup"),
              "greedy_soup": combine("sweep-greedy-soup", members, "greedy-soup")}
    return {"runs": runs, **compare(runs, combos)}


def small_minilm(layers: int) -> Path:
    """MiniLM's embeddings and first `layers` transformer layers (pretrained weights), as a Hub-layout folder."""
    from transformers import AutoModel, AutoTokenizer

    source = real_assets.minilm_dir()
    out = WORK / f"minilm-l{layers}"
    if not (out / "config.json").is_file():
        AutoModel.from_pretrained(source, num_hidden_layers=layers).save_pretrained(out)
        AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def latency(folder: Path, texts: list[str]) -> float:
    """Seconds to label `texts` (batch 32) with hf-finetune's predictor, after one warm-up batch."""
    import torch

    from hf_finetune.finished.predict import Item, load_predictor, predict

    predictor = load_predictor(folder)
    items = [Item(t) for t in texts]
    torch.set_num_threads(2)
    predict(predictor, items[:32])
    started = time.perf_counter()
    predict(predictor, items, batch_size=32)
    return time.perf_counter() - started


def parameters(folder: Path) -> int:
    from hf_finetune.finished.predict import load_predictor

    predictor = load_predictor(folder)
    models = [m.model for m in getattr(predictor, "members", None) or [predictor]]
    return sum(p.numel() for m in models for p in m.parameters())


def part_distill(epochs: float, layers: int) -> dict[str, Any]:
    teacher = WORK / "seeds-ensemble"
    if not (teacher / "run.json").is_file():
        raise SystemExit(f"{teacher} is missing: run --part seeds first")
    student = small_minilm(layers)
    recipe = {**base_recipe(epochs), "model": {"name": str(student)}}
    alone = train("student-alone", recipe, training__seed=1)
    distilled = train("student-distilled", recipe, training__seed=1, distill__teacher=str(teacher),
                      distill__alpha=0.5, distill__temperature=2.0)
    from quality import read_csv

    texts, _ = read_csv(real_assets.bbc_news("few", per_class=16)["test"])
    t_teacher, t_student = latency(teacher, texts), latency(Path(distilled["dir"]), texts)
    p_teacher, p_student = parameters(teacher), parameters(Path(distilled["dir"]))
    ensemble = json.loads((teacher / "metrics.json").read_text())
    return {"teacher": {"dir": str(teacher), **scores(ensemble), "parameters": p_teacher, "latency_s": t_teacher},
            "student_alone": alone, "student_distilled": {**distilled, "parameters": p_student,
                                                          "latency_s": t_student},
            "student_layers": layers, "size_ratio": p_student / p_teacher, "speedup": t_teacher / t_student,
            "test_f1_gain": distilled["test"]["f1"] - alone["test"]["f1"]}


def line(name: str, r: dict[str, Any]) -> str:
    return (f"{name:24s} val acc {r['validation']['accuracy']:.3f} F1 {r['validation']['f1']:.3f} | "
            f"test acc {r['test']['accuracy']:.3f} F1 {r['test']['f1']:.3f}")


def summarize(part: str, result: dict[str, Any]) -> list[str]:
    lines = [f"## {part}"]
    for name, r in result.get("runs", {}).items():
        lines.append(line(name, r) + f" | {r['wall_s']:.0f}s")
    for key in ("best_by_validation", "best_by_test", "ensemble", "soup", "greedy_soup"):
        if key in result:
            r = result[key]
            extra = f" ({r['run']})" if "run" in r else ""
            if "test_f1_vs_best_by_validation" in r:
                extra += f" | test F1 {r['test_f1_vs_best_by_validation']:+.3f} vs best single"
            if "ingredients" in r:
                extra += f" | ingredients {', '.join(r['ingredients'])}"
            lines.append(line(key, r) + extra)
    if part == "distill":
        for key in ("teacher", "student_alone", "student_distilled"):
            lines.append(line(key, result[key]))
        lines.append(f"student/teacher parameters {result['size_ratio']:.3f} "
                     f"({result['student_distilled']['parameters']:,} vs {result['teacher']['parameters']:,}); "
                     f"teacher/student latency {result['speedup']:.2f}x; distilled - alone test F1 "
                     f"{result['test_f1_gain']:+.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["seeds", "sweep", "distill"], required=True)
    parser.add_argument("--epochs", type=float, default=5.0, help="training.num_train_epochs of every run")
    parser.add_argument("--student-layers", type=int, default=2, help="distill: layers kept in the student")
    parser.add_argument("--clean", action="store_true", help="delete the kept runs first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.clean:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.part == "seeds":
        result = part_seeds(args.epochs)
    elif args.part == "sweep":
        result = part_sweep(args.epochs)
    else:
        result = part_distill(args.epochs, args.student_layers)
    result.update(epochs=args.epochs, wall_s=time.perf_counter() - started)
    record = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    record.update(machine=machine(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    key = args.part if args.epochs == 5.0 else f"{args.part}-{args.epochs:g}-epochs"
    record.setdefault("parts", {})[key] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print("\n".join(summarize(args.part, result)) + f"\n(part took {result['wall_s']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
