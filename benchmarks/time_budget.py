"""Where the wall time of full fine-tuning at defaults goes, against the example script (issue #31).

    python benchmarks/time_budget.py                # full BBC, all-MiniLM-L6-v2 (about 20 min on 2 cores)
    python benchmarks/time_budget.py --set preprocessing.max_length=128    # a candidate default, whole run
    python benchmarks/time_budget.py --parts run --data imbalanced-80 --before preprocessing.max_length=256

Part 1: one run of ours at defaults with a timing callback: setup (start to the first optimizer
step), the training steps, each evaluation, each checkpoint save, and the finish (final evaluation
of validation and test, card, plots, publication); then the example script's defaults in the same
invocation for the ratio.
Part "steps" (`--parts steps`, about 3 minutes): seconds per training step of the backbone alone at
each max_length x pooling, including the mean-pooling layer as a full BERT layer against its
arithmetic form.
Part 2: one epoch without evaluation or saves at each combination of max_length (the data-aware
256 and the script's 128) and pooling (mean, the default for sentence-transformers folders, and
[CLS]): training samples/s, so each factor's share of the step time is measured, not guessed.
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

import quality
import real_assets
from common import REPO, machine
from transformers import TrainerCallback

RESULTS = REPO / "benchmarks" / "results"  # time_budget-<data>.json


class PhaseTimer(TrainerCallback):
    """Wall time of the phases of one Trainer run (the callbacks' clock, perf_counter)."""

    def __init__(self, started: float):
        self.started = started
        self.first_step: float | None = None
        self.train_end: float | None = None
        self.evaluations: list[float] = []
        self.saves: list[float] = []
        self._mark = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step is None:
            self.first_step = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._mark = time.perf_counter()  # evaluation and saving follow the step that triggers them

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.train_end is None:
            now = time.perf_counter()
            self.evaluations.append(now - self._mark)
            self._mark = now

    def on_save(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.saves.append(now - self._mark)
        self._mark = now

    def on_train_end(self, args, state, control, **kwargs):
        self.train_end = time.perf_counter()


def timed_default_run(recipe: dict[str, Any], work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from hf_finetune import load_recipe
    from hf_finetune.pipeline import run

    started = time.perf_counter()
    timer = PhaseTimer(started)
    loaded = load_recipe({**recipe, "output": {"dir": str(work / "ours"), "overwrite": True}}, **overrides)
    result = run(loaded, callbacks=[timer])
    wall = time.perf_counter() - started
    train_total = timer.train_end - timer.first_step
    evaluating, saving = sum(timer.evaluations), sum(timer.saves)
    m = result.metrics
    resolved = json.loads((result.output_dir / "run.json").read_text())
    return {"wall_s": wall, "setup_s": timer.first_step - started,
            "steps_s": train_total - evaluating - saving, "evaluations_s": evaluating,
            "evaluations": len(timer.evaluations), "saves_s": saving, "saves": len(timer.saves),
            "finish_s": wall - (timer.train_end - started),
            "test": {k: m["test"][k] for k in ("accuracy", "f1")},
            "validation": {k: m["validation"][k] for k in ("accuracy", "f1")},
            "samples_per_s": m["train"]["samples_per_second"], "epochs": m["train"]["epochs"],
            "max_length": resolved["preprocessing"].get("max_length"),
            "pooling": resolved.get("model", {}).get("pooling")}


def one_epoch(recipe: dict[str, Any], work: Path, max_length: int, pooling: str) -> dict[str, Any]:
    """Training throughput at one setting: one epoch, no evaluation, no saves, data-aware defaults on."""
    overrides = {"preprocessing__max_length": max_length, "model__pooling": pooling,
                 "training__num_train_epochs": 1, "training__eval_strategy": "no", "training__save_strategy": "no",
                 "training__load_best_model_at_end": False}
    import hf_finetune

    started = time.perf_counter()
    result = hf_finetune.train({**recipe, "output": {"dir": str(work / f"e-{max_length}-{pooling}"),
                                                     "overwrite": True}}, **overrides)
    return {"wall_s": time.perf_counter() - started, "samples_per_s": result.metrics["train"]["samples_per_second"],
            "test_f1": result.metrics["test"]["f1"]}


def step_costs(files: dict[str, Path], model_dir: Path, steps: int = 20, warmup: int = 3,
               batch: int = 8) -> dict[str, Any]:
    """Seconds per training step (forward, backward, AdamW) of the real backbone on real training
    texts, at each max_length x pooling: the mean-pooling layer as a full BERT layer (before #31),
    as its arithmetic (models/fast_pooling.py), and [CLS] (the example script's head)."""
    import pandas as pd
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_finetune.models.fast_pooling import use_fast_pooling
    from hf_finetune.models.pooling import add_mean_pooling

    texts = pd.read_csv(files["train"])["text"].astype(str).tolist()[: batch * (steps + warmup)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out: dict[str, Any] = {}
    for max_length in (256, 128):
        batches = [tokenizer(texts[i:i + batch], truncation=True, max_length=max_length, padding=True,
                             return_tensors="pt") for i in range(0, len(texts), batch)]
        for pooling in ("mean-layer", "mean-arithmetic", "cls"):
            torch.manual_seed(0)
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=5)
            if pooling != "cls":
                index = add_mean_pooling(model)
                if pooling == "mean-arithmetic":
                    assert use_fast_pooling(model.base_model.encoder.layer[index])
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)
            model.train()
            labels = torch.zeros(batch, dtype=torch.long)
            for i, inputs in enumerate(batches):
                if i == warmup:
                    started = time.perf_counter()
                model(**inputs, labels=labels[: len(inputs["input_ids"])]).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            per_step = (time.perf_counter() - started) / (len(batches) - warmup)
            out[f"{max_length}-{pooling}"] = {"s_per_step": per_step, "tokens": max_length}
            print(f"steps {max_length:4d} {pooling:16s} {per_step:.3f} s/step", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", nargs="*", default=[], metavar="dotted.key=value",
                        help="recipe values for ours' whole run (a candidate default)")
    parser.add_argument("--before", nargs="*", default=[], metavar="dotted.key=value",
                        help="also run ours with these values (e.g. the previous default) in the same invocation")
    parser.add_argument("--data", default="full", help="BBC regime: full, or imbalanced-N (N x 4/2/1/0.5/0.25 "
                        "training rows per topic, e.g. imbalanced-80 = 320/160/80/40/20)")
    parser.add_argument("--parts", nargs="+", default=["run", "factors"], choices=["run", "factors", "steps"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import yaml

    def values(items: list[str]) -> dict[str, Any]:
        return {k.replace(".", "__"): yaml.safe_load(v) for k, v in (s.split("=", 1) for s in items)}

    overrides = values(args.set)
    regime, _, per_class = args.data.partition("-")
    files = real_assets.bbc_news(regime, per_class=int(per_class or 16))
    model_dir = real_assets.minilm_dir()
    work = Path(tempfile.mkdtemp(prefix="time-budget-"))
    recipe = {"task": "text-classification", "model": {"name": str(model_dir)},
              "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(work / "cache")}}
    out: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "overrides": args.set, "data": args.data, "before_overrides": args.before}
    try:
        if "run" in args.parts:
            out["ours"] = timed_default_run(recipe, work, overrides)
            if args.before:
                out["ours_before"] = timed_default_run(recipe, work, {**overrides, **values(args.before)})
            out["example"] = quality.example_text(files, model_dir, work)
            e = out["example"]
            for name in ("ours", "ours_before"):
                if name not in out:
                    continue
                o = out[name]
                print(f"{name:11s} {o['wall_s']:.0f}s = setup {o['setup_s']:.0f} + steps {o['steps_s']:.0f} + "
                      f"{o['evaluations']} evaluations {o['evaluations_s']:.0f} + {o['saves']} saves "
                      f"{o['saves_s']:.0f} + finish {o['finish_s']:.0f} | max_length {o['max_length']} | test F1 "
                      f"{o['test']['f1']:.3f} | time x{o['wall_s'] / e['wall_s']:.2f} the example's", flush=True)
            print(f"example     {e['wall_s']:.0f}s | test F1 {e['test']['f1']:.3f}", flush=True)
        if "steps" in args.parts:
            out["steps"] = step_costs(files, model_dir)
        if "factors" in args.parts:
            out["factors"] = {f"{n}-{p}": one_epoch(recipe, work, n, p) for n in (256, 128) for p in ("mean", "cls")}
            for key, r in out["factors"].items():
                print(f"one epoch {key:10s} {r['samples_per_s']:.1f} samples/s ({r['wall_s']:.0f}s, test F1 "
                      f"{r['test_f1']:.3f})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"time_budget-{args.data}.json").write_text(json.dumps(out, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
