"""Evaluation memory: hf-finetune keeps one class id per sample; a plain Trainer keeps every logit.

    python benchmarks/eval_memory.py [--rows 50000] [--classes 1000]

Each side evaluates the same model (a tiny BERT with a `--classes`-way head) on the same large split
in a fresh process, and reports how much its peak resident memory grew during evaluation:

  baseline  `Trainer.evaluate` with a `compute_metrics` over logits (the default: all logits are
            gathered and concatenated, rows x classes floats)
  ours      hf-finetune's evaluation: logits become class ids batch by batch
            (`preprocess_logits_for_metrics`), then the report (metrics, per-class, confusion matrix)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import peak_rss_mb, report


def child(mode: str, rows: int, classes: int) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from hf_finetune.data.text import TextCollator
    from hf_finetune.metrics import ClassificationMetrics, logits_to_predictions
    from hf_finetune.pipeline import evaluate_split
    from hf_finetune.testing import write_tiny_bert
    from hf_finetune.training.trainer import ClassificationLoss, FinetuneTrainer

    set_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-evalmem-"))
    folder = write_tiny_bert(work / "bert", [f"w{i}" for i in range(100)])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = BertConfig.from_pretrained(folder, num_labels=classes)
    model = BertForSequenceClassification(config).eval()
    generator = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({
        "input_ids": torch.randint(5, 100, (rows, 16), generator=generator).tolist(),
        "labels": torch.randint(0, classes, (rows,), generator=generator).tolist(),
    })
    args = TrainingArguments(output_dir=str(work / "out"), per_device_eval_batch_size=256, report_to="none",
                             remove_unused_columns=False, label_names=["labels"])
    collator = TextCollator(tokenizer)
    names = [str(i) for i in range(classes)]
    before = peak_rss_mb()
    if mode == "ours":
        metrics = ClassificationMetrics(["accuracy", "f1"], names)
        trainer = FinetuneTrainer(model=model, args=args, data_collator=collator, compute_metrics=metrics,
                                  preprocess_logits_for_metrics=logits_to_predictions, loss_fn=ClassificationLoss())
        accuracy = evaluate_split(trainer, data, metrics, "eval")["accuracy"]
    else:
        def compute(pred):
            return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

        trainer = Trainer(model=model, args=args, data_collator=collator, compute_metrics=compute)
        accuracy = trainer.evaluate(data)["eval_accuracy"]
    return {"growth_mb": peak_rss_mb() - before, "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.rows, args.classes)))
        return
    results = {}
    for mode in ("ours", "baseline"):
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--rows", str(args.rows),
                               "--classes", str(args.classes)], capture_output=True, text=True, check=True)
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        results[mode] = json.loads(line[len("RESULT "):])
    report("eval_memory", [
        ("peak memory growth during evaluation (MB)", results["ours"]["growth_mb"], results["baseline"]["growth_mb"]),
        ("accuracy (same model, same data)", results["ours"]["accuracy"], results["baseline"]["accuracy"]),
    ], extra={"rows": args.rows, "classes": args.classes,
              "all logits would take (MB)": round(args.rows * args.classes * 4 / 2**20, 1)})


if __name__ == "__main__":
    main()
