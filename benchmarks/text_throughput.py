"""Text training throughput on CPU: hf-finetune's defaults against a transformers example-script baseline.

    python benchmarks/text_throughput.py [--train 1600] [--epochs 1]

Model: a BERT encoder the size of MiniLM-L6 (hidden 384, 6 layers, random weights). Data: a
learnable bag-of-words task whose texts have long-tailed lengths (mean about 120 tokens, tail to
512), max_length 256. Same model, data, seed and hyperparameters for both:

  baseline  what run_glue.py-style scripts do by default: every row padded to max_length, random
            batches, the default collator, fp32
  ours      `hf_finetune.pipeline.run` with its defaults: dynamic padding, length-grouped batches
            (plus its end-of-epoch evaluation and checkpoint, which count against it)

Prints training samples/s (Trainer's own figure), final validation accuracy, and the share of
processed tokens that are padding.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import report, write_minilm, write_text_split

MAX_LENGTH = 256
HYPER = {"num_train_epochs": 1, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 32,
         "learning_rate": 2e-4, "warmup_steps": 0.1, "weight_decay": 0.01, "seed": 42}


def baseline(model_dir: Path, files: dict[str, Path], work: Path) -> dict:
    import numpy as np
    from datasets import load_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    raw = load_dataset("csv", data_files={k: str(v) for k, v in files.items()})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names = sorted(set(raw["train"]["label"]))

    def preprocess(batch):
        encoded = tokenizer(batch["text"], padding="max_length", max_length=MAX_LENGTH, truncation=True)
        encoded["labels"] = [names.index(x) for x in batch["label"]]
        return encoded

    data = raw.map(preprocess, batched=True, remove_columns=["text", "label"], load_from_cache_file=False)
    set_seed(HYPER["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(names))
    args = TrainingArguments(output_dir=str(work / "baseline"), eval_strategy="no", save_strategy="no",
                             report_to="none", train_sampling_strategy="random", logging_steps=50, **HYPER)

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                      data_collator=default_data_collator, compute_metrics=accuracy)
    out = trainer.train()
    lengths = [min(len(tokenizer(t)["input_ids"]), MAX_LENGTH) for t in raw["train"]["text"]]
    return {"samples_per_second": out.metrics["train_samples_per_second"],
            "accuracy": trainer.evaluate()["eval_accuracy"],
            "padding_share": 1 - sum(lengths) / (MAX_LENGTH * len(lengths))}


def ours(model_dir: Path, files: dict[str, Path], work: Path) -> dict:
    import json

    from hf_finetune.data.text import LENGTH_COLUMN
    from hf_finetune.pipeline import run
    from hf_finetune.recipe import validate_recipe
    from hf_finetune.training.samplers import SeededLengthGroupedSampler

    recipe = validate_recipe({
        "task": "text-classification",
        "model": {"name": str(model_dir)},
        "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(work / "cache")},
        "preprocessing": {"max_length": MAX_LENGTH},
        "metrics": ["accuracy"],
        "training": dict(HYPER, logging_steps=50),
        "output": {"dir": str(work / "ours")},
    })
    result = run(recipe)
    # Padding share of the batches the sampler actually formed (first epoch).
    from datasets import Dataset

    run_info = json.loads((work / "ours" / "run.json").read_text())
    train = Dataset.from_file(run_info["preprocessing_cache"]["train"]["file"])
    lengths = train[LENGTH_COLUMN]
    batch = HYPER["per_device_train_batch_size"]
    order = list(SeededLengthGroupedSampler(lengths, batch, seed=HYPER["seed"]))
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    processed = sum(max(lengths[j] for j in b) * len(b) for b in batches)
    return {"samples_per_second": result.metrics["train"]["samples_per_second"],
            "accuracy": result.metrics["validation"]["accuracy"],
            "padding_share": 1 - sum(lengths) / processed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1600, help="training rows")
    parser.add_argument("--validation", type=int, default=400)
    parser.add_argument("--epochs", type=float, default=1)
    args = parser.parse_args()
    HYPER["num_train_epochs"] = args.epochs
    work = Path(tempfile.mkdtemp(prefix="bench-text-"))
    files = {"train": write_text_split(work / "train.csv", args.train, seed=1),
             "validation": write_text_split(work / "validation.csv", args.validation, seed=2)}
    model_dir = write_minilm(work / "minilm")
    base = baseline(model_dir, files, work)
    mine = ours(model_dir, files, work)
    report("text_throughput", [
        ("training samples/s", mine["samples_per_second"], base["samples_per_second"]),
        ("validation accuracy", mine["accuracy"], base["accuracy"]),
        ("padding share of processed tokens", mine["padding_share"], base["padding_share"]),
    ], extra={"rows": f"{args.train} train / {args.validation} validation, max_length {MAX_LENGTH}",
              "hyperparameters": HYPER})


if __name__ == "__main__":
    main()
