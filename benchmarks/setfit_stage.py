"""A SetFit-style contrastive first stage for text: does it help at 8-16 labels per class? (issue #17, item 3)

    python benchmarks/setfit_stage.py                                   # 8 and 16 per class, seeds 0 1
    python benchmarks/setfit_stage.py --per-class 8 --seeds 0 --systems ours setfit
    python benchmarks/setfit_stage.py --iterations 20 --max-length 256  # SetFit's own sequence length

Task: all-MiniLM-L6-v2 on BBC News (5 topics; `real_assets.bbc_news("few", per_class, seed)`), 8 or
16 labelled articles per topic; the same held-out validation (318) and test (318) splits for every
sample. Each invocation runs every chosen system on the same splits, once per (per_class, seed).

Systems:
    ours         `hf_finetune.train` with a recipe naming only task, model, data and output: the tool's
                 current default (full fine-tune, data-aware defaults), as in benchmarks/quality.py
    frozen-lr    mean-pooled, unit-length frozen MiniLM embeddings + scikit-learn logistic regression:
                 SetFit's head without its contrastive stage
    setfit       SetFit's recipe in plain torch + transformers: pairs from the labelled rows (each row,
                 each iteration, one positive pair with a same-class row, possibly itself, and one
                 negative pair with another class's row; setfit v0.5 `sentence_pairs_generation`,
                 whose counts v1's `ContrastiveDataset` keeps when num_iterations is set),
                 CosineSimilarityLoss (MSE between the cosine of mean-pooled embeddings and 1/0),
                 1 epoch, batch 16, AdamW lr 2e-5 with weight decay 0.01, 10% linear warmup; then
                 logistic regression on the fine-tuned, unit-length embeddings
    setfit+ours  the contrastively fine-tuned body saved as a Hub-layout folder, then `hf_finetune.train`
                 at defaults from it: the contrastive stage as a first stage in front of our classifier,
                 which is how the tool would integrate it
    tfidf        TF-IDF + logistic regression, scikit-learn defaults (as in quality.py)

frozen-lr and setfit embed at --max-length (default 128, to bound time; SetFit itself uses the
model's max_seq_length, 256 for MiniLM); ours resolves its own (256 from sentence_bert_config.json).
setfit's time covers pair training and embedding every split; setfit+ours's covers pair training
and the whole `hf_finetune.train` run. setfit is seeded with the sample's seed; ours keeps its default.

Reported per system: test accuracy and macro-F1, validation macro-F1, wall time, and the F1
difference and time ratio to ours. Results are appended to benchmarks/results/setfit_stage.json.

Time on 2 CPU cores (estimated from the pair counts, not measured: MiniLM trains about 19
sequences/s at 128 tokens there, quality.py's example script, and embeds about 3x faster): setfit
trains on 2 x iterations x rows pairs of two sequences, so at --iterations 20 1,600 pairs (3,200
sequences, 100 steps) at 8 per class take about 3 min and 3,200 pairs (200 steps) at 16 about
5.5 min, a little over twice that at --max-length 256; embedding the 636 held-out rows and the
training rows takes about 10 s per model. ours takes about 2 min per sample, and so does setfit+ours after the shared contrastive
stage. One (per_class, seed) with every system: about 7.5 min at 8 per class, 10 min at 16; the
default grid (8 and 16, seeds 0 and 1) about 35 min.

Smoke run (seconds; hidden flags): --model TINY_BERT_DIR --data-dir DIR_WITH_{train,validation,test}.csv
--results OUT.json --iterations 1 --set training.num_train_epochs=1.
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

import numpy as np
import quality
import real_assets
from common import REPO, machine
from quality import ours, read_csv, scores, tfidf

RESULTS = REPO / "benchmarks" / "results" / "setfit_stage.json"
SYSTEMS = ("ours", "frozen-lr", "setfit", "setfit+ours", "tfidf")
SPLITS = ("train", "validation", "test")

# SetFit's defaults for the embedding phase (setfit TrainingArguments: batch_size 16, body lr 2e-5,
# l2_weight 0.01 passed as weight_decay, warmup_proportion 0.1, 1 epoch) and the Trainer's clip norm.
BATCH_SIZE = 16
BODY_LR = 2e-5
WEIGHT_DECAY = 0.01
WARMUP = 0.1
MAX_GRAD_NORM = 1.0
EMBED_BATCH = 32  # rows per forward pass when embedding (no gradients)
# sentence-transformers files that make a folder read as MiniLM does: our data-aware max_length
# comes from sentence_bert_config.json, so the fine-tuned body resolves the same defaults.
ST_FILES = ("sentence_bert_config.json", "modules.json", "config_sentence_transformers.json", "1_Pooling")

logger = logging.getLogger("setfit_stage")


# --- embeddings and the logistic-regression head ------------------------------------------------

def mean_pool(model: Any, batch: dict[str, Any]) -> Any:
    """Mean of the token states over real tokens: the pooling all-MiniLM-L6-v2 was trained with."""
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # padding must not enter the mean
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def embed(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), EMBED_BATCH):
            batch = tokenizer(texts[i:i + EMBED_BATCH], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            out.append(torch.nn.functional.normalize(mean_pool(model, batch), dim=-1))
    return torch.cat(out).numpy()


def logistic_head(model: Any, tokenizer: Any, data: dict[str, tuple[list[str], list[str]]],
                  max_length: int) -> dict[str, Any]:
    """Fits SetFit's default head on the train embeddings and scores validation and test."""
    from sklearn.linear_model import LogisticRegression

    features = {split: embed(model, tokenizer, data[split][0], max_length) for split in SPLITS}
    names = sorted(set(data["train"][1]))
    # max_iter above the default 100 only so that lbfgs converges without a warning; the optimum is the same.
    head = LogisticRegression(max_iter=1000).fit(features["train"], data["train"][1])
    out: dict[str, Any] = {}
    for split in ("validation", "test"):
        predicted = head.predict(features[split])
        out[split] = scores([names.index(x) for x in data[split][1]], [names.index(x) for x in predicted])
    return out


def load_body(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return AutoModel.from_pretrained(model_dir, local_files_only=True), tokenizer


# --- the contrastive stage ------------------------------------------------------------------------

def sentence_pairs(labels: list[str], iterations: int, seed: int) -> list[tuple[int, int, float]]:
    """(row, row, 1.0 or 0.0) pairs as SetFit makes them: per iteration and row, one positive and one negative.

    The positive partner is drawn from the row's class including the row itself, as SetFit does.
    """
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    same = {label: np.flatnonzero(labels_arr == label) for label in set(labels)}
    other = {label: np.flatnonzero(labels_arr != label) for label in set(labels)}
    pairs = []
    for _ in range(iterations):
        for i, label in enumerate(labels):
            pairs.append((i, int(rng.choice(same[label])), 1.0))
            pairs.append((i, int(rng.choice(other[label])), 0.0))
    rng.shuffle(pairs)  # the Trainer's random sampler shuffles the pair dataset the same way
    return pairs


def build_optimizer(model: Any, steps: int) -> tuple[Any, Any]:
    import torch
    from transformers import get_linear_schedule_with_warmup

    # As the transformers Trainer (which SetFit trains through): no weight decay on biases and LayerNorm.
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=BODY_LR)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(np.ceil(WARMUP * steps)), steps)
    return optimizer, scheduler


def contrastive_stage(model_dir: Path, texts: list[str], labels: list[str], iterations: int,
                      max_length: int, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """Fine-tunes the body with CosineSimilarityLoss on SetFit's pairs, one epoch; returns it and its figures."""
    import torch

    torch.manual_seed(seed)  # dropout; the pairs have their own generator
    model, tokenizer = load_body(model_dir)
    pairs = sentence_pairs(labels, iterations, seed)
    batches = [pairs[i:i + BATCH_SIZE] for i in range(0, len(pairs), BATCH_SIZE)]
    optimizer, scheduler = build_optimizer(model, len(batches))
    model.train()  # dropout on, as sentence-transformers trains
    started, losses = time.perf_counter(), []
    for batch in batches:
        left, right, target = zip(*batch, strict=True)
        encoded = tokenizer([texts[i] for i in left + right], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
        pooled = mean_pool(model, encoded)
        cosine = torch.nn.functional.cosine_similarity(pooled[:len(batch)], pooled[len(batch):])
        loss = torch.nn.functional.mse_loss(cosine, torch.tensor(target, dtype=cosine.dtype))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    figures = {"pairs": len(pairs), "steps": len(batches), "train_s": time.perf_counter() - started,
               "loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:]))}
    logger.info("contrastive stage: %d pairs, %d steps in %.0fs, loss %.3f -> %.3f", figures["pairs"],
                figures["steps"], figures["train_s"], figures["loss_first"], figures["loss_last"])
    return model, tokenizer, figures


def save_body(model: Any, tokenizer: Any, model_dir: Path, dest: Path) -> Path:
    """A Hub-layout folder of the fine-tuned body, with the original's sentence-transformers files."""
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    for name in ST_FILES:
        source = model_dir / name
        if source.is_dir():
            shutil.copytree(source, dest / name)
        elif source.is_file():
            shutil.copy2(source, dest / name)
    return dest


# --- systems --------------------------------------------------------------------------------------

def frozen_lr(model_dir: Path, data: dict[str, Any], max_length: int) -> dict[str, Any]:
    started = time.perf_counter()
    model, tokenizer = load_body(model_dir)
    out = logistic_head(model, tokenizer, data, max_length)
    return {**out, "wall_s": time.perf_counter() - started, "max_length": max_length}


def setfit(stage: dict[str, Any], data: dict[str, Any], max_length: int) -> dict[str, Any]:
    started = time.perf_counter()
    out = logistic_head(stage["model"], stage["tokenizer"], data, max_length)
    embed_s = time.perf_counter() - started
    return {**out, "wall_s": stage["figures"]["train_s"] + embed_s, "embed_s": embed_s,
            "max_length": max_length, **stage["figures"]}


def setfit_ours(stage: dict[str, Any], recipe: dict[str, Any], model_dir: Path, work: Path) -> dict[str, Any]:
    body = save_body(stage["model"], stage["tokenizer"], model_dir, work / "setfit-body")
    out = ours({**recipe, "model": {"name": str(body)}}, work / "from-setfit")
    ours_s = out["wall_s"]
    return {**out, "wall_s": stage["figures"]["train_s"] + ours_s, "ours_s": ours_s, **stage["figures"]}


def run_sample(files: dict[str, Path], model_dir: Path, args: argparse.Namespace, seed: int,
               work: Path) -> dict[str, Any]:
    """Every chosen system on one sample's splits."""
    data = {split: read_csv(files[split]) for split in SPLITS}
    recipe = {"task": "text-classification", "model": {"name": str(model_dir)},
              "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(work / "cache")}}
    stage: dict[str, Any] = {}
    if {"setfit", "setfit+ours"} & set(args.systems):  # one contrastive stage serves both
        model, tokenizer, figures = contrastive_stage(model_dir, *data["train"], args.iterations,
                                                      args.max_length, seed)
        stage = {"model": model, "tokenizer": tokenizer, "figures": figures}
    systems = {"ours": lambda: ours(recipe, work / "plain"),
               "frozen-lr": lambda: frozen_lr(model_dir, data, args.max_length),
               "setfit": lambda: setfit(stage, data, args.max_length),
               "setfit+ours": lambda: setfit_ours(stage, recipe, model_dir, work),
               "tfidf": lambda: tfidf(files)}
    return {name: systems[name]() for name in SYSTEMS if name in args.systems}


# --- assets, report, entry point ---------------------------------------------------------------------

def sample_files(per_class: int | None, seed: int, data_dir: Path | None) -> dict[str, Path]:
    if data_dir is None:
        return real_assets.bbc_news("few", per_class=per_class, seed=seed)
    return {split: data_dir / f"{split}.csv" for split in SPLITS}  # the smoke test's tiny CSVs


def summarize(name: str, result: dict[str, Any]) -> list[str]:
    lines = [f"## {name}"]
    reference = result.get("ours")
    for system, r in result.items():
        line = (f"{system:11s} test acc {r['test']['accuracy']:.3f} F1 {r['test']['f1']:.3f} | "
                f"val F1 {r['validation']['f1']:.3f} | {r['wall_s']:.0f}s")
        if reference and system != "ours":
            line += (f" | F1 {r['test']['f1'] - reference['test']['f1']:+.3f} vs ours, "
                     f"time x{r['wall_s'] / reference['wall_s']:.2f}")
        lines.append(line)
    return lines


def append_result(entry: dict[str, Any], path: Path) -> None:
    runs = json.loads(path.read_text()) if path.is_file() else []
    runs.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(runs, indent=1, default=float) + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--iterations", type=int, default=20, help="SetFit's num_iterations (pairs per row)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens for frozen-lr and setfit")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--set", nargs="*", default=[], metavar="dotted.key=value",
                        help="extra recipe values for ours and setfit+ours (as in quality.py)")
    # Smoke-test hooks: a tiny model and a folder of train/validation/test.csv instead of the real assets.
    parser.add_argument("--model", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    quality.OURS_OVERRIDES.extend(args.set)  # quality.ours reads them
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)
    model_dir = args.model or real_assets.minilm_dir()
    settings = {k: v for k, v in vars(args).items() if k not in ("model", "data_dir", "results")}
    per_classes = args.per_class if args.data_dir is None else [None]  # the smoke's CSVs fix their own size
    for per_class in per_classes:
        for seed in args.seeds:
            files = sample_files(per_class, seed, args.data_dir)
            with tempfile.TemporaryDirectory(prefix="setfit-stage-") as tmp:
                result = run_sample(files, model_dir, args, seed, Path(tmp))
            name = f"bbc-few-{per_class}-seed{seed}" if args.data_dir is None else f"smoke-seed{seed}"
            print("\n".join(summarize(name, result)), flush=True)
            append_result({"task": name, "per_class": per_class, "seed": seed, "settings": settings,
                           "model": str(model_dir), "machine": machine(),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "systems": result},
                          args.results)


if __name__ == "__main__":
    main()
