"""LoRA against full fine-tuning, and ONNX Runtime against PyTorch, on a real backbone and real data.

    python benchmarks/lora_onnx.py                       # both parts (about 5 minutes on 2 CPU cores)
    python benchmarks/lora_onnx.py --part train --regime imbalanced
    python benchmarks/lora_onnx.py --part latency        # needs the full run of an earlier --part train

Backbone and data (benchmarks/real_assets.py, cached): all-MiniLM-L6-v2 on BBC News (5 topics),
`--regime few` (16 articles per topic, the default) or `imbalanced` (64/32/16/8/4), the same
held-out test split (318 articles) in both.

Part train: two systems, each `hf_finetune.train` in its own subprocess (so that each one's peak
resident memory, ru_maxrss, is its own), with the same recipe except the strategy, each at the
pipeline's data-aware defaults (epochs, learning rates: LoRA's default rate is 10x full's):
    full    finetune.strategy: full
    lora    finetune.strategy: lora (rank 8, alpha 16, dropout 0.1 on query/value; the head in full)
Both use preprocessing.max_length 128 (benchmarks/README.md: 128 vs 256 does not change macro-F1
on this task) and 100 validation rows for model selection, to stay well under 10 minutes.
Reported: test accuracy and macro-F1, trainable parameters, training samples/s, peak RSS, and
the LoRA / full ratios.

Part latency: the full run's model exported with `hf-finetune export` (checked against PyTorch by
the export itself), then PyTorch eager fp32 and ONNX Runtime (CPUExecutionProvider), with the same
number of threads, on the same tokenized test articles (padded to the longest in the batch) at
batch 1 and batch 32: median latency over repeated calls after warm-up, and the PyTorch / ONNX
Runtime ratio (above 1: ONNX Runtime is faster).

Results are appended to benchmarks/results/lora_onnx.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import real_assets
from common import REPO, machine

RESULTS = REPO / "benchmarks" / "results" / "lora_onnx.json"
WORK = Path(tempfile.gettempdir()) / "hf-finetune-bench-lora-onnx"
MAX_LENGTH = 128
VALIDATION_ROWS = 100


def recipe(system: str, regime: str, out: Path) -> dict[str, Any]:
    files = real_assets.bbc_news(regime, 16)
    raw: dict[str, Any] = {
        "task": "text-classification",
        "model": {"name": str(real_assets.minilm_dir())},
        "data": {"files": {split: [str(files[split])] for split in ("train", "validation", "test")},
                 "max_samples": {"validation": VALIDATION_ROWS}},
        "preprocessing": {"max_length": MAX_LENGTH},
        "finetune": {"strategy": system},
        "output": {"dir": str(out), "overwrite": True},
    }
    return raw


def child(system: str, regime: str, out: Path) -> None:
    """One training run; prints its figures as one JSON line (peak RSS of this process included)."""
    import resource

    import yaml

    import hf_finetune

    started = time.time()
    result = hf_finetune.train(recipe(system, regime, out))
    metrics = result.metrics
    train = metrics["train"]
    if system == "lora":
        trainable, total = train["lora"]["trainable_params"], train["lora"]["total_params"]
    else:
        trainable = total = sum(g["params"] for g in train["param_groups"])
    figures = {
        "system": system, "test_accuracy": metrics["test"]["accuracy"], "test_f1": metrics["test"]["f1"],
        "validation_f1": metrics["validation"]["f1"], "trainable_params": trainable, "total_params": total,
        "train_samples_per_second": train["samples_per_second"], "train_runtime_s": train["runtime_s"],
        "epochs": train["epochs"], "learning_rate": yaml.safe_load((out / "recipe.yaml").read_text())["training"][
            "learning_rate"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "wall_s": round(time.time() - started, 1), "output_dir": str(out),
    }
    print("RESULT " + json.dumps(figures), flush=True)


def run_system(system: str, regime: str) -> dict[str, Any]:
    out = WORK / f"{regime}-{system}"
    command = [sys.executable, __file__, "--child", system, "--regime", regime, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{system} failed:\n{done.stderr[-4000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    figures = json.loads(line[len("RESULT "):])
    for log in done.stderr.splitlines():
        if "LoRA: rank" in log or "Default from the data: training" in log:
            print("   ", log.split(": ", 1)[-1][:200])
    return figures


def part_train(regime: str) -> dict[str, Any]:
    rows = {}
    for system in ("full", "lora"):
        print(f"training {system} on BBC {regime} ...", flush=True)
        rows[system] = run_system(system, regime)
    full, lora = rows["full"], rows["lora"]
    print(f"\nBBC News {regime} (16 per class), all-MiniLM-L6-v2, max_length {MAX_LENGTH}, test split 318 rows")
    print(f"{'':28}{'full':>14}{'lora':>14}{'lora/full':>12}")
    for key, label, fmt in (("test_accuracy", "test accuracy", ".3f"), ("test_f1", "test macro-F1", ".3f"),
                            ("trainable_params", "trainable parameters", ",d"),
                            ("train_samples_per_second", "training samples/s", ".2f"),
                            ("peak_rss_mb", "peak RSS (MB)", ".0f"), ("wall_s", "wall time (s)", ".0f")):
        ratio = lora[key] / full[key] if full[key] else float("nan")
        print(f"{label:28}{format(full[key], fmt):>14}{format(lora[key], fmt):>14}{ratio:>11.3f}x")
    print(f"{'epochs':28}{full['epochs']:>14}{lora['epochs']:>14}")
    print(f"{'learning rate':28}{full['learning_rate']:>14g}{lora['learning_rate']:>14g}")
    print(f"lora trains {lora['trainable_params'] / lora['total_params']:.2%} of its {lora['total_params']:,} "
          "parameters")
    return rows


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def part_latency(regime: str) -> dict[str, Any]:
    import torch

    from hf_finetune.finished.export import OnnxModel, export_onnx, format_result
    from hf_finetune.finished.predict import load_predictor, read_column

    run = WORK / f"{regime}-full"
    if not (run / "run.json").is_file():
        raise SystemExit(f"{run} holds no finished run: run --part train first")
    result = export_onnx(run)
    print(format_result(result), end="")
    predictor = load_predictor(run)
    threads = torch.get_num_threads()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    onnx_model = OnnxModel(result.path)
    onnx_model.session = ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    texts = [text for text, _ in read_column(Path(real_assets.bbc_news(regime, 16)["test"]), "text")]
    rows = {}
    for batch in (1, 32):
        encoded = predictor.tokenizer(texts[:batch], truncation=True, max_length=predictor.max_length,
                                      padding=True, return_tensors="pt")
        encoded = {k: v for k, v in encoded.items() if k in onnx_model.inputs}
        with torch.inference_mode():
            reference = predictor.model(**encoded).logits
        got = onnx_model(**encoded).logits
        diff = float((got - reference).abs().max())
        agree = float((got.argmax(-1) == reference.argmax(-1)).float().mean())
        repeats = 30 if batch == 1 else 8

        def torch_call(encoded=encoded):
            with torch.inference_mode():
                predictor.model(**encoded)

        def onnx_call(encoded=encoded):
            onnx_model(**encoded)

        pt, ox = median_seconds(torch_call, repeats), median_seconds(onnx_call, repeats)
        rows[batch] = {"tokens": list(encoded["input_ids"].shape), "pytorch_ms": pt * 1000, "onnxruntime_ms": ox * 1000,
                       "pytorch_over_onnxruntime": pt / ox, "max_abs_diff": diff, "argmax_agreement": agree}
    print(f"\nCPU inference latency, {threads} threads, median (real test articles, max_length {predictor.max_length})")
    print(f"{'batch':>6}{'input':>10}{'PyTorch ms':>13}{'ORT ms':>10}{'PyTorch/ORT':>13}{'max |diff|':>12}{'argmax':>8}")
    for batch, row in rows.items():
        print(f"{batch:>6}{'x'.join(map(str, row['tokens'])):>10}{row['pytorch_ms']:>13.1f}{row['onnxruntime_ms']:>10.1f}"
              f"{row['pytorch_over_onnxruntime']:>12.2f}x{row['max_abs_diff']:>12.1e}{row['argmax_agreement']:>8.0%}")
    return {"threads": threads, "export": {"opset": result.opset, "checks": result.checks}, "batches": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["train", "latency", "all"], default="all")
    parser.add_argument("--regime", choices=["few", "imbalanced"], default="few")
    parser.add_argument("--child", choices=["full", "lora"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.regime, args.out)
        return
    record: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                              "regime": args.regime}
    started = time.time()
    if args.part in ("train", "all"):
        record["train"] = part_train(args.regime)
    if args.part in ("latency", "all"):
        record["latency"] = part_latency(args.regime)
    record["wall_s"] = round(time.time() - started, 1)
    print(f"\n({record['wall_s']:.0f} s; {record['machine']})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    history = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    RESULTS.write_text(json.dumps(history + [record], indent=2) + "\n")


if __name__ == "__main__":
    main()
