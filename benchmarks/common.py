"""Shared pieces of the benchmarks: synthetic data with realistic lengths, models, machine facts.

Every benchmark runs hf-finetune and a plain baseline on the same model, data and hyperparameters
in one process run, and prints both figures and their ratio.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import random
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

VOCAB = 2000  # distinct words w0000..w1999; each is one WordPiece token
MARKERS = 20  # words 0..19 mark positive rows, 20..39 negative ones: a bag-of-words task to learn


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}"


def long_tailed_lengths(n: int, seed: int, mean: float = 120.0, cap: int = 512) -> list[int]:
    """Token counts like real reviews: log-normal, mean about `mean`, a long tail up to `cap`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sigma = 0.75
    mu = np.log(mean) - sigma**2 / 2
    return [int(x) for x in np.clip(rng.lognormal(mu, sigma, n), 8, cap)]


def synthetic_texts(n: int, seed: int) -> list[dict[str, Any]]:
    """Rows {text, label}: random words, a few of them markers of the row's class."""
    rng = random.Random(seed)
    rows = []
    for length in long_tailed_lengths(n, seed):
        label = rng.randint(0, 1)
        words = []
        for _ in range(length - 2):  # [CLS] and [SEP] complete the token count
            if rng.random() < 0.12:
                words.append(f"w{rng.randrange(MARKERS) + (0 if label else MARKERS):04d}")
            else:
                words.append(f"w{rng.randrange(2 * MARKERS, VOCAB):04d}")
        rows.append({"text": " ".join(words), "label": "pos" if label else "neg"})
    return rows


def write_text_split(path: Path, n: int, seed: int) -> Path:
    rows = synthetic_texts(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_minilm(path: Path, hidden: int = 384, layers: int = 6, heads: int = 12) -> Path:
    """A BERT encoder the size of MiniLM-L6 (random weights) with a tokenizer over the synthetic words."""
    from hf_finetune.testing import write_tiny_bert

    return write_tiny_bert(path, [f"w{i:04d}" for i in range(VOCAB)], hidden_size=hidden, num_layers=layers,
                           num_heads=heads, intermediate_size=4 * hidden, max_length=512)


def write_photos(root: Path, per_split: dict[str, int], size: tuple[int, int], seed: int = 0) -> Path:
    """An image folder of photo-sized JPEGs (<root>/<split>/<pattern>/NNNNN.jpg), per_split[split] per class.

    The test patterns of hf_finetune.testing, upscaled: decoding and resizing cost what photos cost.
    """
    from hf_finetune.testing import PATTERNS, pattern_image

    rng = random.Random(seed)
    for split, n in per_split.items():
        for kind in PATTERNS:
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pattern_image(kind, rng, size=64).resize(size).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def report(name: str, rows: list[tuple[str, Any, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Prints `name: figure  ours  baseline  ratio` lines and returns them as a dict (also saved as JSON)."""
    print(f"\n== {name} ==  ({machine()}, {dt.date.today().isoformat()})")
    out: dict[str, Any] = {"benchmark": name, "machine": machine(), "date": dt.date.today().isoformat(),
                           "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "figures": {}}
    for label, ours, baseline in rows:
        ratio = (ours / baseline) if isinstance(ours, (int, float)) and isinstance(baseline, (int, float)) \
            and baseline else None
        shown = f"{ratio:.2f}x" if ratio is not None else ""
        print(f"  {label:<44} ours {_fmt(ours):>10}   baseline {_fmt(baseline):>10}   {shown}")
        out["figures"][label] = {"ours": ours, "baseline": baseline, "ratio": ratio}
    for key, value in (extra or {}).items():
        print(f"  {key}: {value}")
        out[key] = value
    results = REPO / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(out, indent=2))
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class StepTimer:
    """A TrainerCallback measuring each optimizer step, and the time spent waiting for its batch.

    Between the end of step k and the start of step k+1 the Trainer fetches the next batch (and, at
    epoch ends, evaluates and saves); intervals that contain an evaluation or a save are left out.
    """

    def __new__(cls):
        import time

        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.steps: list[float] = []  # seconds per optimizer step, from step start to step start
                self.waits: list[float] = []  # seconds waiting for data before each step
                self._begin = self._end = None
                self._interrupted = False

            def on_step_begin(self, args, state, control, **kwargs):
                now = time.perf_counter()
                if self._end is not None and not self._interrupted:
                    self.waits.append(now - self._end)
                    self.steps.append(now - self._begin)
                self._begin, self._interrupted = now, False

            def on_step_end(self, args, state, control, **kwargs):
                self._end = time.perf_counter()

            def on_evaluate(self, args, state, control, **kwargs):
                self._interrupted = True

            def on_save(self, args, state, control, **kwargs):
                self._interrupted = True

            def on_epoch_end(self, args, state, control, **kwargs):
                self._interrupted = True

            def _skip(self, skip: int) -> int:
                return skip if len(self.steps) > skip else 0  # short runs: keep every step

            def wait_share(self, skip: int = 2) -> float:
                skip = self._skip(skip)
                steps, waits = self.steps[skip:], self.waits[skip:]
                return sum(waits) / sum(steps) if steps else float("nan")

            def seconds_per_step(self, skip: int = 2) -> float:
                steps = self.steps[self._skip(skip):]
                return sum(steps) / len(steps) if steps else float("nan")

        return _Timer()


_ORIGINAL_INIT = None


def add_callback_to_every_trainer(callback) -> None:
    """Makes hf-finetune's trainers carry `callback` from now on (replacing an earlier one), so that
    benchmarks observe runs without changing them."""
    global _ORIGINAL_INIT
    from hf_finetune.training import trainer as trainer_module

    if _ORIGINAL_INIT is None:
        _ORIGINAL_INIT = trainer_module.FinetuneTrainer.__init__
    original = _ORIGINAL_INIT

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(callback)

    trainer_module.FinetuneTrainer.__init__ = init


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
