"""Which epoch do runs at defaults keep? Each run's validation figure after every epoch (issue #31.1).

    python benchmarks/epoch_curves.py --tasks wnut nrc-emotions --systems ours [--set training.seed=43]
    python benchmarks/epoch_curves.py --summary      # the table of every curve recorded so far

Runs `benchmarks/quality.py` with the same arguments and records, for every run of ours, the selection
metric at each evaluation (the run's training_log.json) and the checkpoint it kept, appended to
benchmarks/results/epoch_curves.jsonl; then prints the table. It measured the evidence behind
`training.eval_delay`'s data-aware default (training/data_aware.py, EVALUATE_FROM_EPOCH): run it with
`--set training.eval_delay=0` so that every epoch is evaluated. Like quality.py, it also writes
benchmarks/results/quality.json. Few-label tasks vary their data draw, not `training.seed`: their rows all say
seed 42.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from common import REPO

CURVES = REPO / "benchmarks" / "results" / "epoch_curves.jsonl"


def _recording(train: Any) -> Any:
    """`hf_finetune.train`, also appending the run's evaluations to CURVES."""

    def run(recipe: Any, **overrides: Any) -> Any:
        result = train(recipe, **overrides)
        log = result.output_dir / "training_log.json"
        resolved = json.loads((result.output_dir / "run.json").read_text())
        CURVES.parent.mkdir(parents=True, exist_ok=True)
        with CURVES.open("a") as f:
            f.write(json.dumps({
                "arguments": sys.argv[1:], "task": resolved.get("task"), "folder": str(result.output_dir),
                "overrides": {k: str(v) for k, v in overrides.items()},
                "metric": resolved.get("training", {}).get("metric_for_best_model"),
                "epochs": result.metrics["train"].get("epochs"),
                "kept": result.metrics["train"].get("best_checkpoint"),
                "evaluations": [e for e in json.loads(log.read_text()) if "eval_loss" in e] if log.is_file() else [],
            }, default=str) + "\n")
        return result

    return run


def summary() -> list[str]:
    """One line per recorded run: the task, the figure after each epoch, and the epoch that scored best."""
    lines = []
    for line in CURVES.read_text().splitlines() if CURVES.is_file() else []:
        run = json.loads(line)
        metric = (run["metric"] or "loss").removeprefix("eval_")
        sign = -1.0 if metric.endswith("loss") else 1.0
        points = [(e["epoch"], e[f"eval_{metric}"]) for e in run["evaluations"] if f"eval_{metric}" in e]
        named = re.search(r"quality-(.+?)-[a-z0-9_]{8}/", run.get("folder", "") + "/" + (run.get("kept") or ""))
        name = named.group(1) if named else run["task"]
        if not points:  # a run without evaluations, or whose selection metric is not among them: said, not hidden
            lines.append(f"{name:<18} no evaluation of {metric} recorded")
            continue
        best = max(points, key=lambda p: (sign * p[1], -p[0]))  # the first of equals, as the Trainer keeps it
        seed = run["overrides"].get("training.seed") or next(
            (a.split("=", 1)[1] for a in run["arguments"] if a.startswith("training.seed=")), "42")
        lines.append(f"{name:<18} seed {seed:<3} {metric:<9} "
                     + "  ".join(f"e{epoch:g} {value:.3f}" for epoch, value in points)
                     + f"   best at epoch {best[0]:g}" + ("  <- epoch 1" if best[0] == 1 else ""))
    return lines


def main() -> None:
    if "--summary" in sys.argv:
        print("\n".join(summary()))
        return
    import quality

    import hf_finetune

    hf_finetune.train = _recording(hf_finetune.train)
    quality.main()
    print("\n".join(summary()))


if __name__ == "__main__":
    main()
