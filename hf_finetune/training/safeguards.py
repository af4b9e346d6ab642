"""Training that loses nothing: resume from the newest complete checkpoint, stop cleanly on signals and NaN."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import yaml

from hf_finetune.errors import Problem, RecipeError, TrainingAborted
from hf_finetune.files import write_yaml
from hf_finetune.outputs import checkpoints_dir
from hf_finetune.recipe import Recipe
from hf_finetune.training.callbacks import NonFiniteLossCallback, NonFiniteLossError, PreemptionCallback
from hf_finetune.training.checkpoints import checkpoint_problem, latest_complete_checkpoint

logger = logging.getLogger(__name__)


def find_resume_checkpoint(recipe: Recipe, args: Any) -> str | None:
    """The checkpoint to resume from: the one the recipe names, else the newest complete one."""
    named = recipe.training.get("resume_from_checkpoint")
    if named not in (None, "auto"):
        problem = checkpoint_problem(named)
        if problem:
            raise RecipeError([Problem("training.resume_from_checkpoint", f"{named} is incomplete: {problem}")])
        return str(named)
    folder = checkpoints_dir(recipe.output.dir)
    with args.main_process_first(desc="finding the checkpoint to resume from"):
        # The main process removes incomplete checkpoints; the others then see only complete ones.
        checkpoint = latest_complete_checkpoint(folder, remove_incomplete=args.process_index == 0)
    if checkpoint is None:
        logger.info("Nothing to resume in %s: starting from the beginning", folder)
        return None
    logger.info("Resuming from %s", checkpoint)
    return str(checkpoint)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def record_or_compare_recipe(checkpoints: str | Path, current: dict[str, Any], resuming: bool) -> None:
    """Keeps the recipe a run started with next to its checkpoints; a resume says what changed since."""
    path = Path(checkpoints) / "recipe.yaml"
    if resuming and path.is_file():
        before, now = _flatten(yaml.safe_load(path.read_text())), _flatten(current)
        changed = sorted(k for k in before.keys() | now.keys()
                         if before.get(k) != now.get(k) and not k.endswith("resume_from_checkpoint"))
        if changed:
            logger.warning("Resuming with a recipe that differs from the one the run started with: %s",
                           ", ".join(f"{k} ({before.get(k)!r} -> {now.get(k)!r})" for k in changed))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_yaml(path, current)


DECISIONS_FILE = "decisions.json"  # beside recipe.yaml in the checkpoints folder


def record_decisions(checkpoints: str | Path, decisions: list[Any]) -> None:
    """Keeps the data-aware defaults a run started with, so that resuming it decides nothing again."""
    from hf_finetune.files import write_json

    Path(checkpoints).mkdir(parents=True, exist_ok=True)
    write_json(Path(checkpoints) / DECISIONS_FILE, [{"key": d.key, "value": d.value, "reason": d.reason}
                                                    for d in decisions])


def recorded_decisions(checkpoints: str | Path) -> list[Any] | None:
    """The data-aware defaults the run being resumed started with; None where they were not recorded.

    Deciding again would cost what it cost at the start (the mirror check extracts features of every
    validation image twice: 25-60 s for an EfficientNet on 269 digits, at every rung of rank's halving) and
    could differ where the data changed, which the resumed run's recipe comparison would then report."""
    import json

    from hf_finetune.training.data_aware import Decision

    path = Path(checkpoints) / DECISIONS_FILE
    try:
        return [Decision(d["key"], d["value"], d["reason"]) for d in json.loads(path.read_text())]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume_command(recipe: Recipe) -> str:
    """The command that continues this run, with the overrides it was started with."""
    import shlex

    words = ["hf-finetune", "train", recipe.source or "RECIPE", *recipe.overrides, "--resume"]
    return " ".join(shlex.quote(w) for w in words)


def train_with_safeguards(trainer: Any, recipe: Recipe, checkpoint: str | None) -> Any:
    """`trainer.train()` that checkpoints and stops on SIGTERM/SIGINT and stops on a non-finite loss."""
    preemption, nonfinite = PreemptionCallback(), NonFiniteLossCallback()
    for callback in (preemption, nonfinite):
        callback.trainer = trainer
        trainer.add_callback(callback)
    preemption.install()
    try:
        output = trainer.train(resume_from_checkpoint=checkpoint)
    except NonFiniteLossError as exc:
        last = latest_complete_checkpoint(Path(trainer.args.output_dir))
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been saved yet"
        precision = "fp16" if trainer.args.fp16 else "bf16" if trainer.args.bf16 else "fp32"
        raise TrainingAborted(
            f"training stopped: the loss became NaN or infinite at step {exc.step} (epoch {exc.epoch:.2f}), "
            f"before that step changed any weight; {kept}. Try a lower training.learning_rate (now "
            f"{trainer.args.learning_rate:g}), gradient clipping (training.max_grad_norm, now "
            f"{trainer.args.max_grad_norm:g}) or a wider precision (now {precision}; bf16 is safer than fp16), "
            f"then resume: {resume_command(recipe)}."
        ) from None
    finally:
        preemption.uninstall()
    if preemption.received is not None:
        name = signal.Signals(preemption.received).name
        checkpoint_dir = Path(trainer.args.output_dir) / f"checkpoint-{preemption.stopped_at_step}"
        raise TrainingAborted(
            f"stopped by {name} after step {preemption.stopped_at_step}; checkpoint saved in {checkpoint_dir}. "
            f"Resume with: {resume_command(recipe)}",
            exit_code=128 + preemption.received,
        )
    return output
