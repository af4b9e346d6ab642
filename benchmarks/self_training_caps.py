"""How many pseudo-labels a round should keep: one teacher per cell, one student per cap (issue #34).

    python benchmarks/self_training_caps.py                                   # both tasks, K 8 16 32, seeds 0-2
    python benchmarks/self_training_caps.py --tasks vader-few --per-class 8 --seeds 0 --caps none 2

The tasks and cells are `quality.py --tasks vader-few nrc-few`'s (benchmarks/few_label.py: K labelled rows
per class, train and test files only, so the run carves its validation; a pool of 10x the labels with hidden
labels). Per cell, round 0 of a self-training run is trained once (the teacher: exactly the labelled-only run),
predicts the pool once, and then for each value of `self_training.max_per_labelled` in --caps ("none": no
cap) the pipeline's own selection rule (hf_finetune/selftrain/select.py, at the recipe's other defaults)
picks the pseudo-labels and round 1 trains from the backbone on the labelled + pseudo-labelled rows, as
`hf_finetune/selftrain/rounds.py` does. Each student's test macro-F1 is compared with its teacher's: the
gain of one round, the same seed and settings. Sharing the teacher makes the caps' comparison paired and
costs one round 0 per cell instead of one per cap.

Results go to benchmarks/results/self_training_caps.json (one entry per cell, resumable: cells already
there are skipped), and a table of the mean change per task and K is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import few_label
import numpy as np
import real_assets
from common import REPO, machine

RESULTS = REPO / "benchmarks" / "results" / "self_training_caps.json"


def cell(task: str, per_class: int, seed: int, caps: list[float | None], work: Path) -> dict[str, Any]:
    from hf_finetune import load_recipe, pipeline
    from hf_finetune.selftrain import rounds
    from hf_finetune.selftrain.pool import load_pool, pseudo_labelled_rows, truth_ids
    from hf_finetune.selftrain.predict import model_ready_pool, predict_probabilities
    from hf_finetune.selftrain.select import class_thresholds, select_pseudo_labels

    files = few_label.TASKS[task](per_class, seed)
    recipe = load_recipe({
        "task": "text-classification", "model": {"name": str(real_assets.minilm_dir())},
        "data": {"files": {"train": str(files["train"]), "test": str(files["test"])},
                 "unlabeled": {"files": str(files["pool"])}, "cache_dir": str(work / "cache")},
        "self_training": {"rounds": 1, "score_test_each_round": True},
        "output": {"dir": str(work / "out"), "overwrite": True}})
    st = recipe.self_training
    session = pipeline.setup(recipe, False, time.time())
    pool, labels = load_pool(recipe), session.data.labels
    names, truth = list(labels.names), truth_ids(pool, labels)
    ready = model_ready_pool(recipe, pool, session.setup.tokenizer, session.preprocessing)
    labelled = rounds.labelled_counts(session)
    teacher = rounds._train_round(0, session, recipe, {})
    out: dict[str, Any] = {"teacher": {"test_f1": teacher.record["test"]["f1"], "strategy": teacher.record["strategy"],
                                       "seconds": teacher.record["seconds"]},
                           "labelled_per_class": labelled.tolist(), "pool_rows": len(pool), "students": {}}
    probs = predict_probabilities(teacher.session.setup.model, ready, session.data.collator,
                                  session.args.per_device_eval_batch_size, session.args)
    thresholds = class_thresholds(names, st.threshold, st.class_thresholds)
    for cap in caps:
        class_caps = rounds.pseudo_label_caps(cap, labelled, names, len(pool))
        selection = select_pseudo_labels(probs, thresholds, st.max_class_share, st.resolved_top_share(), class_caps)
        rounds._clear_checkpoints(Path(session.args.output_dir))
        extra = pseudo_labelled_rows(pool, selection.indices, selection.labels, labels)
        student = rounds._train_round(1, pipeline.setup(recipe, False, time.time(), extra_train=extra), recipe, {})
        out["students"]["none" if cap is None else f"{cap:g}"] = {
            "test_f1": student.record["test"]["f1"], "kept": selection.kept,
            "pseudo_label_accuracy": float((selection.labels == truth[selection.indices]).mean()),
            "strategy": student.record["strategy"], "seconds": student.record["seconds"]}
        del student
    return out


def summary(results: dict[str, Any]) -> list[str]:
    caps = sorted({c for r in results.values() for c in r["students"]}, key=lambda c: (c != "none", c))
    lines = ["| task | per class | teacher (round 0) | " + " | ".join(f"cap {c}: change" for c in caps) + " |",
             "|---" * (3 + len(caps)) + "|"]
    for task in few_label.TASKS:
        for k in sorted({int(key.split("/")[1]) for key in results if key.startswith(task + "/")}):
            cells = [r for key, r in results.items() if key.startswith(f"{task}/{k}/")]
            teacher = [r["teacher"]["test_f1"] for r in cells]
            row = [task, str(k), f"{np.mean(teacher):.3f} +- {np.std(teacher):.3f}"]
            for c in caps:
                change = [r["students"][c]["test_f1"] - r["teacher"]["test_f1"] for r in cells if c in r["students"]]
                kept = [r["students"][c]["kept"] for r in cells if c in r["students"]]
                right = [r["students"][c]["pseudo_label_accuracy"] for r in cells if c in r["students"]]
                row.append(f"{np.mean(change):+.3f} ({sum(d > 0 for d in change)}/{len(change)} up; kept "
                           f"{min(kept)}-{max(kept)} at {min(right):.0%}-{max(right):.0%})")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=sorted(few_label.SELF_TRAINING_TASKS, reverse=True),
                        choices=sorted(few_label.SELF_TRAINING_TASKS))
    parser.add_argument("--per-class", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--caps", nargs="+", default=["none", "1", "2"],
                        help="self_training.max_per_labelled values; 'none' for no cap")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    caps = [None if c == "none" else float(c) for c in args.caps]
    results = json.loads(RESULTS.read_text())["cells"] if RESULTS.is_file() else {}
    for task in args.tasks:
        for k in args.per_class:
            for seed in args.seeds:
                key = f"{task}/{k}/{seed}"
                if key in results:
                    continue
                with tempfile.TemporaryDirectory(prefix="st-caps-") as work:
                    results[key] = cell(task, k, seed, caps, Path(work))
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                           time.gmtime()),
                                               "cells": results}, indent=1) + "\n")
                r = results[key]
                print(key, f"teacher {r['teacher']['test_f1']:.3f}", " ".join(
                    f"{c}: {s['test_f1'] - r['teacher']['test_f1']:+.3f} ({s['kept']} at {s['pseudo_label_accuracy']:.2f})"
                    for c, s in r["students"].items()), flush=True)
    print("\n".join(summary(results)))


if __name__ == "__main__":
    main()
