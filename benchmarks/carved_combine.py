"""Issue #33's check: two runs of a train + test recipe (validation carved from train) combine.

    flock -x /tmp/hf-cpu.lock python benchmarks/carved_combine.py [--per-class 40] [--epochs 4]

Task: all-MiniLM-L6-v2 on BBC News (benchmarks/real_assets.py), `per_class` training articles per
topic and the shared 318-row test split, with no validation file: each run carves validation from
train (data.validation_size 0.1, data.seed 42). Members: training.seed 42 and 43, at the pipeline's
defaults except `preprocessing.max_length: 128` and `training.num_train_epochs` (to fit 2 CPU cores).
Then `hf-finetune ensemble --method logits` and `--method greedy-soup` on the two runs, every member
scored on the same carved validation rows and the test split. Results are appended to
benchmarks/results/carved_combine.json and printed as a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import real_assets
from common import REPO, machine

RESULTS = REPO / "benchmarks" / "results" / "carved_combine.json"
WORK = REPO / "benchmarks" / "results" / "carved-combine-work"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--epochs", type=float, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import yaml

    from hf_finetune.cli import main as cli

    files = real_assets.bbc_news("few", per_class=args.per_class)
    recipe = {"task": "text-classification", "model": {"name": str(real_assets.minilm_dir())},
              "data": {"files": {"train": str(files["train"]), "test": str(files["test"])},  # no validation file
                       "cache_dir": str(WORK / "cache")},
              "preprocessing": {"max_length": 128},
              "training": {"num_train_epochs": args.epochs, "save_total_limit": 1}}
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs = []
    for seed in (42, 43):
        out = WORK / f"run{seed}"
        one = {**recipe, "training": {**recipe["training"], "seed": seed},
               "output": {"dir": str(out), "overwrite": True}}
        path = WORK / f"recipe{seed}.yaml"
        path.write_text(yaml.safe_dump(one))
        assert cli(["train", str(path)]) == 0
        runs.append(out)
    train_s = time.perf_counter() - started
    figures = {}
    for method in ("logits", "greedy-soup"):
        out = WORK / method
        assert cli(["ensemble", str(out), *map(str, runs), "--method", method, "--overwrite"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        figures[method] = {role: {k: metrics[role][k] for k in ("accuracy", "f1", "num_samples")}
                           for role in ("validation", "test")}
        for name, reports in metrics["members"].items():
            figures[name] = {role: {k: reports[role][k] for k in ("accuracy", "f1", "num_samples")}
                             for role in ("validation", "test")}
        if method == "greedy-soup":
            figures[method]["ingredients"] = metrics["soup"]["ingredients"]
    record = {"per_class": args.per_class, "epochs": args.epochs, "train_s": round(train_s, 1),
              "total_s": round(time.perf_counter() - started, 1), "machine": machine(), "figures": figures,
              "carved": json.loads((runs[0] / "run.json").read_text())["splits"]["validation"]["carved"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*history, record], indent=2))
    print(f"\n{'model':<14} {'val acc':>8} {'val F1':>8} {'test acc':>9} {'test F1':>8}")
    for name, f in figures.items():
        print(f"{name:<14} {f['validation']['accuracy']:>8.4f} {f['validation']['f1']:>8.4f} "
              f"{f['test']['accuracy']:>9.4f} {f['test']['f1']:>8.4f}")
    print(f"validation: {figures['logits']['validation']['num_samples']} carved rows; test: "
          f"{figures['logits']['test']['num_samples']} rows; {record['total_s']} s in all")


if __name__ == "__main__":
    main()
