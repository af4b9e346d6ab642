"""Few-label classification beyond topics: sentiment and emotion words, at 8, 16 and 32 labels per class.

Used by `python benchmarks/quality.py --tasks vader-few nrc-few` (every per-class count and seed in one run):

    vader-few   VADER's human-rated texts (Hutto & Gilbert 2014; regression.py reads them from the
                vadersentiment==3.3.2 source archive): negative (mean rating <= -1), neutral (|rating| < 0.5)
                and positive (>= 1); texts between the bands are left out as ambiguous. The same hash split
                as the vader regression task (70/15/15 per source). Training: K texts per class sampled by
                seed from the train split; pool (self-training): POOL_FACTOR x the labelled rows from the rest
                of the train split, in its natural class mix, its labels used only to score pseudo-labels;
                test: TEST_PER_CLASS texts per class from the test split.
    nrc-few     the NRC emotion lexicon's words (nrclex==4.1.0, research use; multi_label.py reads it) with
                exactly one of the emotions in NRC_EMOTIONS (sentiment labels ignored): a single-label word ->
                emotion task. Split by a hash of the word (70/30); K words per class for training, the pool
                from the rest of the 70%, TEST_PER_CLASS per class for test.

Only train and test files are given: like a user with a few dozen labels, the recipe carves its own
validation (or, below 10 rows per class, selects by k-fold: training/few_label.py). Systems per
(task, K, seed): ours at defaults, ours + self-training (vader-few: its pool), transformers'
run_classification.py defaults (quality.example_text, scored on test), TF-IDF + logistic regression
(words; tfidf-char: character 2-5-grams, as multi_label.py uses for single words).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import multi_label
import numpy as np
import real_assets
import regression

PER_CLASS = tuple(int(k) for k in os.environ.get("FEW_LABEL_PER_CLASS", "8,16,32").split(","))
_seeds = os.environ.get("FEW_LABEL_SEEDS", "3")  # a count (seeds 0..n-1) or a comma list ("3,4": more seeds later)
SEEDS = tuple(int(s) for s in _seeds.split(",")) if "," in _seeds else tuple(range(int(_seeds)))
TEST_PER_CLASS = int(os.environ.get("FEW_LABEL_TEST_PER_CLASS", "100"))  # 300 VADER texts; nrc-few: see below
POOL_FACTOR = 10  # the unlabelled pool is ten times the labelled rows (the target condition)
NEGATIVE_AT, NEUTRAL_BELOW, POSITIVE_AT = -1.0, 0.5, 1.0  # human mean ratings on -4..+4
NRC_EMOTIONS = ("anger", "fear", "joy", "sadness")  # distinct emotions; joy has the fewest single-emotion words (142)
logger = logging.getLogger("quality")
NRC_TEST_PER_CLASS = 40  # joy has 142 single-emotion words, about 43 of them in the 30% test part


def _sentiment(rating: float) -> str | None:
    if rating <= NEGATIVE_AT:
        return "negative"
    if rating >= POSITIVE_AT:
        return "positive"
    return "neutral" if abs(rating) < NEUTRAL_BELOW else None


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def _take(rows: list[tuple[str, str, str]], per_class: dict[str, int], order: str) -> list[tuple[str, str, str]]:
    """(id, text, label) rows: per_class[label] of each label, by a hash order named `order`."""
    taken, out = dict.fromkeys(per_class, 0), []
    for row in sorted(rows, key=lambda r: real_assets._rank(order, r[0])):
        if row[2] in taken and taken[row[2]] < per_class[row[2]]:
            out.append(row)
            taken[row[2]] += 1
    short = {k: v for k, v in taken.items() if v < per_class[k]}
    if short:
        raise ValueError(f"not enough rows for {short} (taken of {per_class})")
    return out


def _splits(name: str, train: list[tuple[str, str, str]], test: list[tuple[str, str, str]], labels: tuple[str, ...],
            per_class: int, seed: int, test_per_class: int) -> dict[str, Path]:
    folder = real_assets._root() / "data" / "few-label" / f"{name}-{per_class}-seed{seed}-test{test_per_class}"

    def make(tmp: Path) -> None:
        chosen = _take(train, dict.fromkeys(labels, per_class), f"{name}/train/{seed}")
        taken = {r[0] for r in chosen}
        rest = sorted((r for r in train if r[0] not in taken), key=lambda r: real_assets._rank(name, "pool", seed, r[0]))
        pool = rest[:POOL_FACTOR * len(chosen)]  # natural class mix
        _write(tmp / "train.csv", [(t, y) for _, t, y in chosen])
        _write(tmp / "pool.csv", [(t, y) for _, t, y in pool])
        _write(tmp / "test.csv", [(t, y) for _, t, y in _take(test, dict.fromkeys(labels, test_per_class),
                                                             f"{name}/test")])

    folder = real_assets._build(folder, make)
    return {split: folder / f"{split}.csv" for split in ("train", "pool", "test")}


def vader_few(per_class: int, seed: int) -> dict[str, Path]:
    """train.csv (per_class per sentiment), pool.csv (10x, natural mix, labels for scoring), test.csv."""
    train, test = [], []
    for source, rows in regression._ground_truth().items():
        ordered = sorted(rows, key=lambda r: real_assets._rank("vader", 0, source, r[0]))  # regression.vader's split
        n_val, n_test = (round(len(ordered) * regression.SPLIT_SHARES[s]) for s in ("validation", "test"))
        for i, (item, rating, text) in enumerate(ordered):
            label = _sentiment(rating)
            if label is None:
                continue
            row = (f"{source}/{item}", text, label)
            if i < n_test:
                test.append(row)
            elif i >= n_test + n_val:
                train.append(row)
    return _splits("vader", train, test, ("negative", "neutral", "positive"), per_class, seed, TEST_PER_CLASS)


def nrc_few(per_class: int, seed: int) -> dict[str, Path]:
    """Words with exactly one of NRC_EMOTIONS: train.csv, pool.csv, test.csv (word, emotion)."""
    rows = []
    for word, labels in multi_label.nrc_lexicon().items():
        emotions = set(labels) & set(NRC_EMOTIONS)
        if len(emotions) == 1:
            rows.append((word, word, emotions.pop()))
    test_part = [r for r in rows if int(real_assets._rank("nrc-few", "split", r[0])[:8], 16) % 10 < 3]
    held_out = set(test_part)
    train_part = [r for r in rows if r not in held_out]
    return _splits("nrc", train_part, test_part, NRC_EMOTIONS, per_class, seed, NRC_TEST_PER_CLASS)


# --- the run: every (per-class count, seed) of a task, every system -------------------------------------------

SELF_TRAINING = {"rounds": 1, "score_test_each_round": True}  # one round: the benchmark's time budget
TASKS = {"vader-few": vader_few, "nrc-few": nrc_few}
SELF_TRAINING_TASKS = {"vader-few", "nrc-few"}


def run_task(name: str, work: Path, systems: set[str], ours: Any, example: Any, tfidf: Any) -> dict[str, Any]:
    """{per_class: {seed: {system: result}}}; `ours`, `example`, `tfidf` are quality.py's systems."""
    model_dir = real_assets.minilm_dir()
    out: dict[str, Any] = {}
    for per_class in PER_CLASS:
        for seed in SEEDS:
            files = TASKS[name](per_class, seed)
            cell = work / f"{per_class}-{seed}"
            base = {"task": "text-classification", "model": {"name": str(model_dir)},
                    "data": {"files": {"train": str(files["train"]), "test": str(files["test"])},
                             "cache_dir": str(cell / "cache")}}
            runs: dict[str, Any] = {}
            if "ours" in systems:
                runs["ours"] = ours(base, cell / "a")
            if "ours+st" in systems and name in SELF_TRAINING_TASKS:
                st = {**base, "data": {**base["data"], "unlabeled": {"files": str(files["pool"])}},
                      "self_training": SELF_TRAINING}
                runs["ours+st"] = ours(st, cell / "b", self_training=True)
            if "example" in systems:
                runs["example"] = example(files, model_dir, cell / "c", eval_splits=("test",))
            if "tfidf" in systems:
                runs["tfidf"] = tfidf(files, eval_splits=("test",))
            if "tfidf-char" in systems:  # single words: their spelling is all a bag of n-grams sees
                runs["tfidf-char"] = tfidf(files, eval_splits=("test",), analyzer="char_wb", ngram_range=(2, 5))
            logger.info("%s %d per class, seed %d: %s", name, per_class, seed,
                        ", ".join(f"{k} {v['test']['f1']:.3f}" for k, v in runs.items()))
            out.setdefault(str(per_class), {})[str(seed)] = runs
    return out


def summarize(name: str, result: dict[str, Any]) -> list[str]:
    """A markdown table: per-class count x system, test macro-F1 mean +- standard deviation over seeds."""
    systems = sorted({s for cells in result.values() for runs in cells.values() for s in runs},
                     key=["ours", "ours+st", "example", "tfidf", "tfidf-char"].index)
    lines = [f"## {name} (test macro-F1, mean +- std over {len(SEEDS)} seeds; wall s)",
             "| per class | " + " | ".join(systems) + " |", "|---" * (len(systems) + 1) + "|"]
    for per_class, cells in result.items():
        row = []
        for system in systems:
            f1 = [runs[system]["test"]["f1"] for runs in cells.values() if system in runs]
            wall = [runs[system]["wall_s"] for runs in cells.values() if system in runs]
            row.append(f"{np.mean(f1):.3f} +- {np.std(f1):.3f} ({np.mean(wall):.0f} s)" if f1 else "-")
        lines.append(f"| {per_class} | " + " | ".join(row) + " |")
    return lines
