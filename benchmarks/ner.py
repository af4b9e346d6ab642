"""Named entities on real tweets (WNUT-16): ours at its defaults, run_ner.py's defaults, a CRF.

Used by `python benchmarks/quality.py --tasks wnut` (the same run, the same split):

    ours      hf_finetune.train with a recipe naming only task, model, data and output (all defaults);
              then pipeline() on the saved folder scores the test tweets again (aggregation "first",
              word by word as the run scores them, and "simple")
    run_ner   transformers' examples/pytorch/token-classification/run_ner.py at its defaults, reduced to
              what it does for a CoNLL file: fast tokenizer, first sub-token labelled, max_length the
              tokenizer's, dynamic padding, lr 5e-5, 3 epochs, batch 8, no evaluation while training,
              the last checkpoint, seqeval's figures
    crf       a linear-chain CRF on word features (sklearn-crfsuite, the tutorial's features plus the
              tweet's @, # and links; c1 = c2 = 0.1, 100 iterations)

Scores: entity micro-F1 (the selection metric), precision, recall, macro-F1, token accuracy; wall time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import real_assets

RUN_NER_ARGS = {"learning_rate": 5e-5, "per_device_train_batch_size": 8, "num_train_epochs": 3}


def scores(truth: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {"f1": float(f1_score(truth, predicted, zero_division=0)),
            "precision": float(precision_score(truth, predicted, zero_division=0)),
            "recall": float(recall_score(truth, predicted, zero_division=0)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(truth, predicted))}


def ours(files: dict[str, Path], model_dir: Path, work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    import hf_finetune

    recipe = {"task": "token-classification", "model": {"name": str(model_dir)},
              "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(work / "cache")},
              "output": {"dir": str(work / "ours"), "overwrite": True}}
    started = time.perf_counter()
    result = hf_finetune.train(recipe, **overrides)
    wall = time.perf_counter() - started
    m = result.metrics
    keys = ("f1", "precision", "recall", "macro_f1", "accuracy")
    import json

    run = json.loads((result.output_dir / "run.json").read_text())
    resolved = __import__("yaml").safe_load((result.output_dir / "recipe.yaml").read_text())
    out = {"validation": {k: m["validation"][k] for k in keys}, "test": {k: m["test"][k] for k in keys},
           "baseline_test_f1": m["test"]["majority_baseline"]["f1"], "warnings": m.get("warnings", []),
           "wall_s": wall, "samples_per_s": m["train"]["samples_per_second"], "epochs": m["train"]["epochs"],
           "steps": m["train"]["steps"], "max_length": run["preprocessing"]["max_length"],
           "stride": run["preprocessing"]["stride"], "learning_rate": resolved["training"]["learning_rate"],
           "head_learning_rate": resolved["finetune"].get("head_learning_rate"),
           "batch": run["training"]["total_train_batch_size"]}
    out["pipeline"] = pipeline_scores(result.output_dir, files["test"], run["preprocessing"]["stride"])
    return out


def _tags_from_groups(words: list[str], groups: list[dict]) -> list[str]:
    """Word tags from pipeline() entity groups over the words joined by spaces: a word whose first
    character starts a group begins an entity, one inside a group continues it, the others are O."""
    starts, text = [], ""
    for word in words:
        starts.append(len(text))
        text += word + " "
    tags = ["O"] * len(words)
    for i, start in enumerate(starts):
        group = next((g for g in groups if g["start"] <= start < g["end"]), None)
        if group is not None:
            tags[i] = ("B-" if group["start"] == start else "I-") + group["entity_group"]
    return tags


def pipeline_scores(folder: Path, test: Path, stride: int) -> dict[str, Any]:
    """The test tweets scored again through transformers.pipeline() on the saved folder."""
    from transformers import pipeline

    sentences = real_assets.read_conll(test)
    truth = [tags for _, tags in sentences]
    out = {}
    for strategy in ("first", "simple"):
        tagger = pipeline("token-classification", model=str(folder), aggregation_strategy=strategy, stride=stride)
        texts = [" ".join(words) for words, _ in sentences]
        groups = tagger(texts, batch_size=16)
        found = [_tags_from_groups(words, g) for (words, _), g in zip(sentences, groups, strict=True)]
        out[strategy] = scores(truth, found)
    return out


def run_ner(files: dict[str, Path], model_dir: Path, work: Path) -> dict[str, Any]:
    """run_ner.py at its defaults on CoNLL files (token and tag columns), reduced to what it does."""
    import numpy as np
    from datasets import Dataset
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    started = time.perf_counter()
    raw = {split: real_assets.read_conll(path) for split, path in files.items()}
    labels = sorted({t for _, tags in raw["train"] for t in tags})  # run_ner.py: get_label_list, sorted
    label2id = {name: i for i, name in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def encode(rows: list[tuple[list[str], list[str]]]) -> Dataset:
        words = [w for w, _ in rows]
        enc = tokenizer(words, padding=False, truncation=True, is_split_into_words=True)
        out_labels = []
        for i, (_, tags) in enumerate(rows):
            previous, row = None, []
            for word in enc.word_ids(i):
                row.append(-100 if word is None or word == previous else label2id.get(tags[word], -100))
                previous = word
            out_labels.append(row)
        return Dataset.from_dict({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                                  "attention_mask": enc["attention_mask"], "labels": out_labels})

    ready = {split: encode(rows) for split, rows in raw.items()}
    model = AutoModelForTokenClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    args = TrainingArguments(output_dir=str(work / "run_ner"), seed=42, report_to="none", save_strategy="no",
                             per_device_eval_batch_size=8, use_cpu=True, **RUN_NER_ARGS)
    trainer = Trainer(model=model, args=args, train_dataset=ready["train"], processing_class=tokenizer,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    train = trainer.train()
    out: dict[str, Any] = {}
    for split in ("validation", "test"):
        predicted = trainer.predict(ready[split])
        ids = np.argmax(predicted.predictions, axis=-1)
        truth, found = [], []
        for pred_row, label_row in zip(ids, predicted.label_ids, strict=True):
            keep = label_row != -100
            truth.append([labels[i] for i in label_row[keep]])
            found.append([labels[i] for i in pred_row[keep]])
        # words cut by truncation are scored by run_ner.py only as far as they were kept; score them O here
        for k, (_, tags) in enumerate(raw[split]):
            missing = len(tags) - len(truth[k])
            truth[k] = list(tags)
            found[k] = found[k] + ["O"] * missing
        out[split] = scores(truth, found)
    out.update(wall_s=time.perf_counter() - started, samples_per_s=train.metrics["train_samples_per_second"],
               learning_rate=RUN_NER_ARGS["learning_rate"], epochs=RUN_NER_ARGS["num_train_epochs"])
    return out


def _word_features(words: list[str], i: int) -> dict[str, Any]:
    word = words[i]
    features: dict[str, Any] = {
        "bias": 1.0, "lower": word.lower(), "suffix3": word[-3:], "suffix2": word[-2:], "prefix3": word[:3],
        "is_upper": word.isupper(), "is_title": word.istitle(), "is_digit": word.isdigit(),
        "mention": word.startswith("@"), "hashtag": word.startswith("#"), "link": word.startswith("http"),
        "length": min(len(word), 10),
    }
    for offset, name in ((-1, "prev"), (1, "next")):
        j = i + offset
        if 0 <= j < len(words):
            features.update({f"{name}_lower": words[j].lower(), f"{name}_is_title": words[j].istitle(),
                             f"{name}_is_upper": words[j].isupper()})
        else:
            features[f"{name}_edge"] = True
    return features


def crf(files: dict[str, Path]) -> dict[str, Any]:
    import sklearn_crfsuite

    started = time.perf_counter()
    data = {split: real_assets.read_conll(path) for split, path in files.items()}

    def featurise(rows: list[tuple[list[str], list[str]]]) -> list[list[dict[str, Any]]]:
        return [[_word_features(words, i) for i in range(len(words))] for words, _ in rows]

    model = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.1, c2=0.1, max_iterations=100,
                                 all_possible_transitions=True)
    model.fit(featurise(data["train"]), [tags for _, tags in data["train"]])
    out: dict[str, Any] = {}
    for split in ("validation", "test"):
        out[split] = scores([tags for _, tags in data[split]], model.predict(featurise(data[split])))
    out["wall_s"] = time.perf_counter() - started
    return out


def wnut_task(work: Path, systems: set[str], overrides: dict[str, Any]) -> dict[str, Any]:
    files = real_assets.wnut16()
    model_dir = real_assets.minilm_dir()
    runs = {"ours": lambda: ours(files, model_dir, work, overrides), "run_ner": lambda: run_ner(files, model_dir, work),
            "crf": lambda: crf(files)}
    return {name: run() for name, run in runs.items() if name in systems}


def summarize(result: dict[str, Any]) -> list[str]:
    lines = ["## wnut (WNUT-16 tweets, all-MiniLM-L6-v2; entity micro-F1 on test)"]
    reference = result.get("run_ner")
    for system, r in result.items():
        t = r["test"]
        line = (f"{system:8s} test F1 {t['f1']:.3f} P {t['precision']:.3f} R {t['recall']:.3f} macro-F1 "
                f"{t['macro_f1']:.3f} acc {t['accuracy']:.3f} | val F1 {r['validation']['f1']:.3f} | {r['wall_s']:.0f}s")
        if reference and system != "run_ner":
            line += (f" | F1 {t['f1'] - reference['test']['f1']:+.3f} vs run_ner, "
                     f"time x{r['wall_s'] / reference['wall_s']:.2f}")
        lines.append(line)
        for strategy, s in (r.get("pipeline") or {}).items():
            lines.append(f"         pipeline(aggregation_strategy={strategy!r}) test F1 {s['f1']:.3f}")
    return lines
