"""Quality on real backbones and real data: ours at its defaults beside what a user would otherwise run.

    python benchmarks/quality.py                      # every task (tens of minutes on 2 CPU cores)
    python benchmarks/quality.py --tasks bbc-imbalanced bbc-few
    python benchmarks/quality.py --tasks speed        # equal settings: samples/s and padding share
    python benchmarks/quality.py --tasks vader-few nrc-few   # few labels beyond topics (about 30 minutes)

Tasks (assets from benchmarks/real_assets.py, cached after the first run):
    bbc-full, bbc-few, bbc-imbalanced   all-MiniLM-L6-v2 on BBC News (5 topics): the full training set,
    bbc-imbalanced-80                   16 labels per class, class counts 64/32/16/8/4 and 320/160/80/40/20;
                                        the same held-out validation and test splits in every regime
    digits                              EfficientNet-Lite0 (ImageNet) on scikit-learn's digits as images
    nrc-emotions                        all-MiniLM-L6-v2 on the NRC emotion lexicon (multi-label, 10 labels):
                                        ours, run_classification.py's multi-label defaults, TF-IDF + LR
                                        (benchmarks/multi_label.py)
    photo-collages                      EfficientNet-Lite0 on collages of 8 real photos (multi-label: which
                                        photos appear): ours vs random init (benchmarks/multi_label_images.py)
    wnut                                all-MiniLM-L6-v2 tagging WNUT-16 tweets (10 entity types): ours,
                                        run_ner.py's defaults and a CRF (benchmarks/ner.py)
    vader-few, nrc-few                  all-MiniLM-L6-v2 at 8, 16 and 32 labels per class, 3 seeds: VADER's texts
                                        as negative/neutral/positive by human rating, NRC emotion words with one
                                        of anger/fear/joy/sadness; ours, ours + self-training (vader-few: a pool
                                        of 10x the labels), run_classification.py's defaults, TF-IDF + LR
                                        (benchmarks/few_label.py)
    vader                               all-MiniLM-L6-v2 regressing human sentiment ratings (VADER's data,
                                        -4..+4): ours, run_classification.py's regression defaults,
                                        TF-IDF + ridge, the training mean (benchmarks/regression.py)
    stsb                                the same systems regressing the STS Benchmark's similarity ratings of
                                        sentence pairs (0..5), 600 / 200 / 600 pairs (benchmarks/regression.py)
    textures                            EfficientNet-Lite0 + UperNet segmenting mosaics of real texture
                                        photos: ours, random init, run_semantic_segmentation.py's
                                        settings (benchmarks/segmentation.py)

Systems, in the same run:
    ours       `hf_finetune.train` with a recipe naming only model, data and output (all defaults)
    example    transformers' example scripts at their defaults (run_classification.py /
               run_image_classification.py): pad to 128, batch 8, lr 5e-5, 3 epochs, no class weights,
               no evaluation during training, the last checkpoint
    tfidf      (text) TF-IDF + logistic regression, scikit-learn defaults
    random     (vision) the same architecture and our defaults, from random weights
    ours-at-example  (text) ours at the example script's settings: [CLS], 128 tokens, lr 5e-5, batch 8,
               3 epochs, finetune.data_aware false (equal settings, issue #31.3)

Reported per task and system: test accuracy and macro-F1 (validation too), wall time, training
samples/s, and ratios to the example script. Results are appended to benchmarks/results/quality.json.
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

import few_label
import multi_label
import multi_label_images
import ner
import numpy as np
import real_assets
import regression
import segmentation
from common import REPO, machine

RESULTS = REPO / "benchmarks" / "results" / "quality.json"
TEXT_TASKS = {"bbc-full": ("full", 16), "bbc-few": ("few", 16), "bbc-imbalanced": ("imbalanced", 16),
              "bbc-imbalanced-80": ("imbalanced", 80)}
EXAMPLE_MAX_LENGTH = 128  # run_classification.py: --max_seq_length 128, --pad_to_max_length True
EXAMPLE_ARGS = {"learning_rate": 5e-5, "per_device_train_batch_size": 8, "num_train_epochs": 3}

logger = logging.getLogger("quality")
SYSTEMS = {"ours", "ours+st", "example", "tfidf", "tfidf-char", "random", "run_ner", "crf", "mean",
           "ours-at-example"}  # --systems narrows it
OURS_OVERRIDES: list[str] = []  # --set: dotted.key=value for ours


def scores(truth: list[int], predicted: list[int]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(truth, predicted)),
            "f1": float(f1_score(truth, predicted, average="macro", zero_division=0))}


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


# --- systems ----------------------------------------------------------------------------------------

def evaluation_curve(folder: Path) -> list[dict[str, float]]:
    """Each evaluation during training (training_log.json): its epoch, step and the selection metric."""
    log = json.loads((folder / "training_log.json").read_text()) if (folder / "training_log.json").is_file() else []
    return [{"epoch": e.get("epoch"), "step": e.get("step"),
             **{k: v for k, v in e.items() if k in ("eval_f1", "eval_pearson", "eval_loss", "eval_accuracy")}}
            for e in log if "eval_loss" in e]


def ours(recipe: dict[str, Any], work: Path, self_training: bool = False) -> dict[str, Any]:
    import yaml

    import hf_finetune

    recipe = {**recipe, "output": {"dir": str(work / "ours"), "overwrite": True}}
    values = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in OURS_OVERRIDES)}
    started = time.perf_counter()
    result = hf_finetune.train(recipe, **values)
    wall = time.perf_counter() - started
    m = result.metrics
    resolved = json.loads((result.output_dir / "run.json").read_text())
    return {"validation": {k: m["validation"][k] for k in ("accuracy", "f1")},
            "test": {k: m["test"][k] for k in ("accuracy", "f1")},
            "baseline_test_f1": m["test"].get("majority_baseline", {}).get("f1"),
            "warnings": m.get("warnings", []), "wall_s": wall,
            "samples_per_s": m["train"]["samples_per_second"], "epochs": m["train"]["epochs"],
            "steps": m["train"]["steps"], "max_length": resolved["preprocessing"].get("max_length"),
            "learning_rate": resolved["training"]["learning_rate"],
            "strategy": yaml.safe_load((result.output_dir / "recipe.yaml").read_text())["finetune"].get("strategy"),
            "best_checkpoint": m["train"].get("best_checkpoint"), "evaluations": evaluation_curve(result.output_dir),
            **({"self_training": [{k: r.get(k) for k in ("round", "kept", "pseudo_label_accuracy", "train_rows",
                                                            "test", "top_share_curve", "threshold_curve")}
                                  for r in m["self_training"]["rounds"]]} if self_training else {})}


def example_text(files: dict[str, Path], model_dir: Path, work: Path,
                 eval_splits: tuple[str, ...] = ("validation", "test"), seed: int = 42) -> dict[str, Any]:
    """run_classification.py at its defaults, reduced to what it does for a csv with text,label."""
    import datasets
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    started = time.perf_counter()
    raw = datasets.load_dataset("csv", data_files={k: str(files[k]) for k in ("train", *eval_splits)},
                                cache_dir=str(work / "hf-cache"))
    names = sorted(set(raw["train"]["label"]))
    label2id = {n: i for i, n in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    set_seed(seed)  # as run_classification.py: before the model, so the new head's weights follow the seed

    def encode(batch):
        out = tokenizer(batch["text"], padding="max_length", max_length=EXAMPLE_MAX_LENGTH, truncation=True)
        out["labels"] = [label2id[x] for x in batch["label"]]
        return out

    ready = raw.map(encode, batched=True, remove_columns=["text", "label"])
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id)
    args = TrainingArguments(output_dir=str(work / "example"), seed=seed, report_to="none", save_strategy="no",
                             per_device_eval_batch_size=8, use_cpu=True, **EXAMPLE_ARGS)
    trainer = Trainer(model=model, args=args, train_dataset=ready["train"], processing_class=tokenizer)
    train = trainer.train()
    out: dict[str, Any] = {}
    for split in eval_splits:
        predicted = trainer.predict(ready[split])
        out[split] = scores(list(predicted.label_ids), list(np.argmax(predicted.predictions, axis=-1)))
    out.update(wall_s=time.perf_counter() - started, samples_per_s=train.metrics["train_samples_per_second"],
               max_length=EXAMPLE_MAX_LENGTH, learning_rate=EXAMPLE_ARGS["learning_rate"])
    return out


def tfidf(files: dict[str, Path], eval_splits: tuple[str, ...] = ("validation", "test"), **vectorizer: Any
          ) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    texts, labels = read_csv(files["train"])
    names = sorted(set(labels))
    vectorizer = TfidfVectorizer(**vectorizer)
    classifier = LogisticRegression(max_iter=1000).fit(vectorizer.fit_transform(texts), labels)
    out: dict[str, Any] = {}
    for split in eval_splits:
        texts_s, labels_s = read_csv(files[split])
        predicted = classifier.predict(vectorizer.transform(texts_s))
        out[split] = scores([names.index(x) for x in labels_s], [names.index(x) for x in predicted])
    out["wall_s"] = time.perf_counter() - started
    return out


# --- tasks ------------------------------------------------------------------------------------------

def text_task(name: str, work: Path) -> dict[str, Any]:
    regime, per_class = TEXT_TASKS[name]
    files = real_assets.bbc_news(regime, per_class=per_class)
    model_dir = real_assets.minilm_dir()
    recipe = {"task": "text-classification", "model": {"name": str(model_dir)},
              "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(work / "cache")}}
    # ours at the example script's settings (issue #31.3): its [CLS] head, 128 tokens, lr 5e-5, batch 8,
    # 3 epochs, no data-aware defaults; what still differs is ours (length-grouped batches, fused AdamW,
    # mixed precision where the machine has it, the best epoch on validation)
    at_example = {**recipe, "model": {**recipe["model"], "pooling": "cls"}, "finetune": {"data_aware": False},
                  "preprocessing": {"max_length": EXAMPLE_MAX_LENGTH}, "training": dict(EXAMPLE_ARGS)}
    systems = {"ours": lambda: ours(recipe, work), "example": lambda: example_text(files, model_dir, work),
               "tfidf": lambda: tfidf(files), "ours-at-example": lambda: ours(at_example, work / "at-example")}
    return {name: run() for name, run in systems.items() if name in SYSTEMS}


def digits_task(work: Path) -> dict[str, Any]:
    folder = real_assets.digits_folder()
    model_dir = real_assets.efficientnet_lite_dir(0)
    recipe = {"task": "image-classification", "model": {"name": str(model_dir)},
              "data": {"image_folder": str(folder), "cache_dir": str(work / "cache")}}
    example = {**recipe, "finetune": {"data_aware": False},
               "training": {**EXAMPLE_ARGS, "eval_strategy": "no", "save_strategy": "no",
                            "load_best_model_at_end": False}}
    random_init = {**recipe, "model": {"name": str(model_dir), "pretrained": False}}
    systems = {"ours": lambda: ours(recipe, work / "a"), "example": lambda: ours(example, work / "b"),
               "random": lambda: ours(random_init, work / "c")}
    return {name: run() for name, run in systems.items() if name in SYSTEMS}


def speed_task(work: Path) -> dict[str, Any]:
    """Equal settings (the same network, max_length 128, batch 8, 1 epoch, lr 5e-5): throughput and padding share."""
    from transformers import AutoTokenizer

    files = real_assets.bbc_news("full")
    model_dir = real_assets.minilm_dir()
    texts, _ = read_csv(files["train"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=128)["input_ids"]])
    # The same network as the script's: its [CLS] head, without the mean-pooling layer (one more layer to run)
    recipe = {"task": "text-classification", "model": {"name": str(model_dir), "pooling": "cls"},
              "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(work / "cache")},
              "preprocessing": {"max_length": EXAMPLE_MAX_LENGTH}, "finetune": {"data_aware": False},
              "training": {**EXAMPLE_ARGS, "num_train_epochs": 1, "eval_strategy": "no", "save_strategy": "no",
                           "load_best_model_at_end": False}}
    mine = ours(recipe, work)
    example = _example_one_epoch(files, model_dir, work)
    # Padding share: ours pads each length-grouped batch (our own sampler's order) to its longest row;
    # the script pads every row to 128.
    from hf_finetune.training.samplers import SeededLengthGroupedSampler

    order = np.array(list(SeededLengthGroupedSampler(lengths=lengths.tolist(), batch_size=8, seed=42)))
    grouped = [lengths[order[i:i + 8]] for i in range(0, len(order), 8)]
    ours_padded = sum(len(b) * b.max() for b in grouped)
    return {"ours": mine, "example": example,
            "padding_share": {"ours": 1 - lengths.sum() / ours_padded,
                              "example": 1 - lengths.sum() / (len(lengths) * EXAMPLE_MAX_LENGTH)},
            "no_padding_limit": (len(lengths) * EXAMPLE_MAX_LENGTH) / lengths.sum()}


def _example_one_epoch(files: dict[str, Path], model_dir: Path, work: Path) -> dict[str, Any]:
    saved = dict(EXAMPLE_ARGS)
    EXAMPLE_ARGS["num_train_epochs"] = 1
    try:
        return example_text(files, model_dir, work)
    finally:
        EXAMPLE_ARGS.update(saved)


def summarize(task: str, result: dict[str, Any]) -> list[str]:
    lines = [f"## {task}"]
    reference = result.get("example")
    for system, r in result.items():
        if not isinstance(r, dict) or "test" not in r:
            continue
        line = (f"{system:8s} test acc {r['test']['accuracy']:.3f} F1 {r['test']['f1']:.3f} | val acc "
                f"{r['validation']['accuracy']:.3f} F1 {r['validation']['f1']:.3f} | {r['wall_s']:.0f}s")
        if r.get("samples_per_s"):
            line += f" | {r['samples_per_s']:.1f} samples/s"
        if reference and system != "example":
            line += (f" | F1 {r['test']['f1'] - reference['test']['f1']:+.3f} vs example, "
                     f"time x{r['wall_s'] / reference['wall_s']:.2f}")
        lines.append(line)
    if "padding_share" in result:
        lines.append(f"padding share ours {result['padding_share']['ours']:.1%} vs example "
                     f"{result['padding_share']['example']:.1%}; samples/s ratio "
                     f"{result['ours']['samples_per_s'] / result['example']['samples_per_s']:.2f}x; "
                     f"no-padding limit {result['no_padding_limit']:.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["bbc-imbalanced", "bbc-few", "bbc-full", "digits", "speed"])
    parser.add_argument("--systems", nargs="+", default=sorted(SYSTEMS), help="which systems to run")
    parser.add_argument("--set", nargs="*", default=[], metavar="dotted.key=value",
                        help="extra recipe values for ours (to measure a candidate default)")
    args = parser.parse_args()
    SYSTEMS.intersection_update(args.systems)
    OURS_OVERRIDES.extend(args.set)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    torch.manual_seed(0)
    record = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    record["machine"] = machine()
    record["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for task in args.tasks:
        work = Path(tempfile.mkdtemp(prefix=f"quality-{task}-"))
        try:
            if task in TEXT_TASKS:
                result = text_task(task, work)
            elif task == "digits":
                result = digits_task(work)
            elif task == "speed":
                result = speed_task(work)
            elif task == "textures":
                import yaml

                overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in OURS_OVERRIDES)}
                result = segmentation.textures_task(work, SYSTEMS, overrides)
            elif task == "nrc-emotions":  # multi-label (benchmarks/multi_label.py)
                import yaml

                overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in OURS_OVERRIDES)}
                result = multi_label.nrc_task(work, SYSTEMS, overrides)
            elif task == "photo-collages":  # image multi-label (benchmarks/multi_label_images.py)
                import yaml

                overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in OURS_OVERRIDES)}
                result = multi_label_images.collages_task(work, SYSTEMS, overrides)
            elif task == "wnut":
                import yaml

                overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in OURS_OVERRIDES)}
                result = ner.wnut_task(work, SYSTEMS, overrides)
            elif task in few_label.TASKS:  # few-label sentiment and emotion words (benchmarks/few_label.py)
                result = few_label.run_task(task, work, SYSTEMS, ours, example_text, tfidf)  # --set: in ours()
            elif task in ("vader", "stsb"):  # text regression (benchmarks/regression.py)
                import yaml

                overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in OURS_OVERRIDES)}
                result = regression.vader_task(work, SYSTEMS, overrides, task)
            else:
                raise SystemExit(f"unknown task {task}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        record.setdefault("tasks", {})[task] = result
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=2, default=float) + "\n")
        summary = {"wnut": ner.summarize, "vader": regression.summarize, "stsb": regression.summarize, "textures": segmentation.summarize,
                   "nrc-emotions": multi_label.summarize, "photo-collages": multi_label_images.summarize}.get(task)
        if task in few_label.TASKS:
            print("\n".join(few_label.summarize(task, result)), flush=True)
            continue
        print("\n".join(summary(result) if summary else summarize(task, result)), flush=True)


if __name__ == "__main__":
    main()
