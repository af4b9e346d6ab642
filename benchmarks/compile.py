"""torch.compile, measured: the same hf-finetune run with `training.torch_compile` off and on.

    python benchmarks/compile.py [--steps 24]

Model and data as in text_throughput.py (MiniLM-sized BERT, long-tailed texts, max_length 256).
Steady-state seconds per optimizer step, after the first steps (which include compilation), and
the compilation overhead. Nothing is assumed: compilation stays a recipe switch, off by default,
unless this benchmark shows a gain on the machine at hand.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import StepTimer, add_callback_to_every_trainer, report, write_minilm, write_text_split


def run_once(model_dir: Path, files: dict, work: Path, compile_: bool, steps: int) -> tuple[float, float]:
    from hf_finetune.pipeline import run
    from hf_finetune.recipe import validate_recipe

    timer = StepTimer()
    add_callback_to_every_trainer(timer)
    recipe = validate_recipe({
        "task": "text-classification", "model": {"name": str(model_dir)},
        "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(work / "cache")},
        "preprocessing": {"max_length": 256}, "metrics": ["accuracy"],
        "training": {"max_steps": steps, "per_device_train_batch_size": 16, "torch_compile": compile_,
                     "eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False,
                     "logging_steps": 1000},
        "output": {"dir": str(work / ("compiled" if compile_ else "eager")), "overwrite": True},
    })
    start = time.perf_counter()
    run(recipe)
    total = time.perf_counter() - start
    return timer.seconds_per_step(skip=4), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-compile-"))
    files = {"train": write_text_split(work / "train.csv", args.steps * 16, seed=1),
             "validation": write_text_split(work / "validation.csv", 64, seed=2)}
    model_dir = write_minilm(work / "minilm")
    eager_step, eager_total = run_once(model_dir, files, work, False, args.steps)
    compiled_step, compiled_total = run_once(model_dir, files, work, True, args.steps)
    report("compile", [
        ("steady-state steps/s (compiled = ours, eager = baseline)", 1 / compiled_step, 1 / eager_step),
        ("whole run seconds, compilation included", compiled_total, eager_total),
    ], extra={"steps": args.steps, "batch": 16, "max_length": 256})


if __name__ == "__main__":
    main()
