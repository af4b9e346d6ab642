"""One trial: an ordinary run of the pipeline with the trial's recipe values, in its own folder.

A trial's recipe is the user's recipe (with the command's overrides), plus the sampled values, plus
what the search owns: `output.dir` (the trial folder), `hub.push: false`, and
`training.metric_for_best_model` (the objective: each trial selects its checkpoint on what the
search optimizes). It runs through `pipeline.run`, so preprocessing caches, strategies, model
building, safeguards and the output folder are those of `hf-finetune train`.
"""

from __future__ import annotations

import gc
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from hf_finetune.errors import TrainingAborted, UserError
from hf_finetune.search import ranks

logger = logging.getLogger(__name__)

TRIALS_DIR = "trials"


class TrialFailed(Exception):
    """A trial that failed on every process alike (its recipe, a non-finite loss, out of memory on the
    only process): recorded as failed, and the search goes on."""


class SearchStopped(UserError):
    """A failure the search cannot go past safely (several processes, one of them failed): every rank stops."""


class RunPaused(Exception):
    """A run that `PauseAt` stopped at its share of the steps, its checkpoint saved: `run_trial(...,
    resume=True)` continues it."""

    def __init__(self, step: int, max_steps: int, value: float | None, latest: float | None = None,
                 evaluated: tuple[int | None, Any, Any] | None = None):
        # value: what the run would give if it ended here (PauseAt.delivered); latest: the pause's own evaluation;
        # evaluated: (step, predictions, label ids) of the evaluation that gave `value`; the predictions are None
        # where this part of the run did not make it (a best evaluation from before the run was resumed)
        self.step, self.max_steps, self.value = step, max_steps, value
        self.latest = value if latest is None else latest
        self.evaluated = evaluated
        super().__init__(f"paused at step {step} of {max_steps}")


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of one tune command shares."""

    raw: dict[str, Any]  # the user's recipe with the command's overrides, without its search section
    source: str | None  # the recipe file
    out_dir: Path  # the search folder (the recipe's output.dir)
    metric: str  # the objective: a validation metric name without prefix (f1, accuracy, loss)


def trial_dir(out_dir: Path, number: int) -> Path:
    return Path(out_dir) / TRIALS_DIR / f"trial-{number:04d}"


def trial_recipe(plan: TrialPlan, values: dict[str, Any], number: int) -> Any:
    """The validated recipe of trial `number`.

    Raises:
        RecipeError: the sampled values make an invalid recipe (recorded as a failed trial).
    """
    from hf_finetune.capability_checks import RECIPE_CHECKS
    from hf_finetune.errors import RecipeError
    from hf_finetune.recipe.loading import apply_values
    from hf_finetune.recipe.validation import validate_recipe

    owned = {"output.dir": str(trial_dir(plan.out_dir, number)), "output.overwrite": False, "hub.push": False,
             "training.metric_for_best_model": plan.metric}
    try:
        raw = apply_values(plan.raw, {**values, **owned})
    except RecipeError as exc:
        raise RecipeError(exc.problems, plan.source) from None
    return validate_recipe(raw, plan.source, [f"{k}={v}" for k, v in values.items()], checks=RECIPE_CHECKS)


class PruningCallback(TrainerCallback):
    """Reports the objective at every evaluation; rank 0 decides whether to prune and every rank follows.

    All ranks call `on_evaluate` at the same point (evaluation gathers from every process), so the
    broadcast of the decision meets on every rank, and a pruned trial stops on all of them together.
    """

    reads_every_evaluation = True  # its rungs are evaluations: the run evaluates its first epoch too

    def __init__(self, trial: Any, metric: str):
        self.trial = trial  # the Optuna trial on rank 0; None on the other ranks
        self.metric = metric
        self.evaluations = 0
        self.last: float | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        import optuna

        self.evaluations += 1
        value = (metrics or {}).get(f"eval_{self.metric}")
        prune = False
        if self.trial is not None and isinstance(value, (int, float)) and math.isfinite(value):
            self.last = float(value)
            self.trial.report(float(value), self.evaluations)
            prune = self.trial.should_prune()
        if ranks.broadcast(prune):
            if self.trial is not None:
                self.trial.set_user_attr("pruned_at", self.evaluations)  # the summary's pruned-at-which-rung
            raise optuna.TrialPruned(f"pruned at evaluation {self.evaluations} (step {state.global_step}, "
                                     f"{self.metric} {value})")
        return control


class PauseAt(TrainerCallback):
    """Stops a run once it has trained `fraction` of its optimizer steps: evaluates there, saves a checkpoint,
    then raises `RunPaused` with the evaluation's objective (from `on_save`: the checkpoint is complete then,
    and the run has written no finished model, so resuming it goes on from that step).

    The run keeps its own total steps, so its learning-rate schedule is the whole run's: a run paused and
    resumed trains the weights one uninterrupted run trains (the pause adds one evaluation and checkpoint,
    which the run's best-checkpoint selection may choose). A fraction that reaches the last step pauses
    nothing. `training.save_strategy: best` saves only a new best, so it cannot pause: refused before.
    One process only (rank's fine-tuning mode); under several, a raise on one rank would strand the others.
    """

    reads_every_evaluation = True  # the value it hands on is the best so far: of every epoch, as rank's rungs were set

    def __init__(self, fraction: float, metric: str):
        self.fraction, self.metric = fraction, metric
        self.step: int | None = None  # where to pause; None: the run finishes
        self.stopping = False
        self.value: float | None = None
        self.evaluations: Any = None  # the run's KeptEvaluations (training/kept_evaluation.py): `watch`

    def watch(self, evaluations: Any) -> None:
        """The run's kept evaluations, whose predictions the pause hands on with its value (rank's ties after
        fine-tuning are called on them: rank/confidence.py)."""
        self.evaluations = evaluations

    def on_train_begin(self, args, state, control, **kwargs):
        step = max(1, math.ceil(self.fraction * state.max_steps - 1e-9))
        self.step = step if step < state.max_steps else None
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.step is not None and state.global_step >= self.step:
            self.stopping = True
            control.should_evaluate = control.should_save = control.should_training_stop = True
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.stopping:
            value = (metrics or {}).get(f"eval_{self.metric}")
            self.value = float(value) if isinstance(value, (int, float)) else None
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.stopping:
            step = getattr(state, "best_global_step", None) if self._gives_best(args, state) else state.global_step
            kept = self.evaluations.by_step.get(step) if self.evaluations is not None else None
            raise RunPaused(state.global_step, state.max_steps, self.delivered(args, state), self.value,
                            (step, *(kept[:2] if kept else (None, None))))
        return control

    def delivered(self, args, state) -> float | None:
        """What the run would give if it ended here: its best evaluation where it keeps its best checkpoint on
        this metric (as a finished run's value is), else this evaluation's. On 300 digits Lite2 reached 0.171 at
        7% of its run, dipped to 0.119 at 20% and was ranked there by the dip, below two networks it fine-tunes
        past."""
        return float(state.best_metric) if self._gives_best(args, state) else self.value

    def _gives_best(self, args, state) -> bool:
        """Whether the run, ended here, would give its best evaluation (not this one)."""
        chosen = (args.metric_for_best_model or "").removeprefix("eval_")
        return bool(args.load_best_model_at_end and chosen == self.metric and self.value is not None
                    and math.isfinite(self.value)  # a diverged run is not the best it once was
                    and isinstance(state.best_metric, (int, float)) and math.isfinite(state.best_metric))

    def on_train_end(self, args, state, control, **kwargs):
        if self.stopping:  # it stopped and no checkpoint was saved (save_strategy: best saves only a new best)
            raise UserError(f"the run was to pause at step {self.step} with a checkpoint, and none was saved "
                            f"(training.save_strategy {args.save_strategy}); pausing needs epoch, steps or no")
        return control


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc))


def run_trial(plan: TrialPlan, recipe: Any, trial: Any, number: int, *, resume: bool = False,
              pause_at: float | None = None) -> float:
    """Trains one trial and returns its objective: the selected model's validation metric.

    Args:
        resume: continue the trial's run from its newest checkpoint (one that `pause_at` left).
        pause_at: stop once this share of the run's steps is trained (`PauseAt`), keeping its checkpoint.

    Raises:
        RunPaused: `pause_at` stopped it; its checkpoint is kept.
        optuna.TrialPruned: the pruner stopped it (on every rank).
        TrialFailed: it failed alike on every rank; the search goes on.
        SearchStopped: it failed in a way several processes cannot recover from together.
        TrainingAborted: stopped by SIGTERM/SIGINT: the whole search stops.
    """
    import optuna

    from hf_finetune.pipeline import run

    callback = PruningCallback(trial, plan.metric)
    callbacks: list[Any] = [callback] + ([PauseAt(pause_at, plan.metric)] if pause_at is not None else [])
    try:
        try:
            result = run(recipe, resume=resume, callbacks=callbacks)
        except (optuna.TrialPruned, RunPaused):
            raise
        except TrainingAborted as exc:
            if exc.exit_code != 1:  # a signal: the user or the scheduler stops the search
                raise TrainingAborted(f"the search stopped during trial {number} ({str(exc).split(';')[0]}); the "
                                      "trial is recorded as failed. Run the same tune command to continue the "
                                      "study", exit_code=exc.exit_code) from None
            raise TrialFailed(str(exc)) from None  # a non-finite loss: every rank agreed on it
        except Exception as exc:
            if not (isinstance(exc, UserError) or _out_of_memory(exc)):
                raise  # a bug: stop with its traceback
            if ranks.world_size() > 1:
                raise SearchStopped(
                    f"trial {number} failed on process {ranks.rank()}: {exc}\nUnder several processes the search "
                    "stops here on every process (the others may be waiting for this one inside training, "
                    "where nothing can reach them). The trial is recorded as failed; run the same command to "
                    "continue the study."
                ) from None
            raise TrialFailed(f"{type(exc).__name__}: {exc}") from None
        value = (result.metrics.get("validation") or {}).get(plan.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TrialFailed(f"the run produced no finite validation {plan.metric} (got {value!r})")
        if trial is not None:
            from hf_finetune.search.onset import TRIVIAL, trivial_figure

            test = result.metrics.get("test") or {}
            trial.set_user_attr("test_" + plan.metric, test.get(plan.metric))
            # The trivial model's figure: the learning onset of pruning reads it (search/onset.py).
            trial.set_user_attr(TRIVIAL, trivial_figure(result.metrics.get("validation") or {}, plan.metric))
            trial.set_user_attr("evaluations", callback.evaluations)
        return float(value)
    except RunPaused:
        raise  # its checkpoint is what resuming reads
    except BaseException:
        if trial is not None:
            trial.set_user_attr("evaluations", callback.evaluations)
        if ranks.is_main():  # a stopped trial's checkpoints are of no use: it is not resumed
            shutil.rmtree(trial_dir(plan.out_dir, number) / "checkpoints", ignore_errors=True)
        raise
    finally:
        release_memory()


def release_memory() -> None:
    """Frees what a finished trial held before the next one starts."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def host_rss_mb() -> float | None:
    """This process's resident memory in MiB (psutil comes with accelerate)."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss / 2**20


def follow(plan: TrialPlan) -> None:
    """The loop of ranks other than 0: run each trial rank 0 broadcasts, until it broadcasts the end."""
    import optuna

    while True:
        message = ranks.broadcast(None)
        if message is None:
            return
        number, values = message["number"], message["values"]
        recipe = trial_recipe(plan, values, number)  # rank 0 validated the same values already
        try:
            run_trial(plan, recipe, None, number)
        except (optuna.TrialPruned, TrialFailed):
            continue  # rank 0 records it; the next trial (or the end) comes from rank 0
