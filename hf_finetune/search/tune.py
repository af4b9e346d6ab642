"""`hf-finetune tune RECIPE`: check everything, open the study, run trials until the budget is spent, report.

Under `accelerate launch` with several processes, rank 0 runs Optuna's `study.optimize`; its objective
broadcasts each trial's values and every rank trains that trial (`trials.follow` on the others).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_finetune.errors import Problem, RecipeError, UserError
from hf_finetune.search import ranks
from hf_finetune.search.defaults import STRATEGY_KEYS, baseline_params, pin_strategy, run_values
from hf_finetune.search.outputs import (
    best_of,
    check_writable,
    guard_search_dir,
    publish_best,
    remove_trial_folder,
    search_lock,
    write_plots,
    write_trials_csv,
)
from hf_finetune.search.space import default_space, endpoint_problems, resolve_space, space_yaml, suggest
from hf_finetune.search.study import (
    claim_trial_zero,
    finished_trials,
    import_optuna,
    open_study,
    release_trial_zero,
    shown_url,
    storage_url,
)
from hf_finetune.search.trials import (
    SearchStopped,
    TrialFailed,
    TrialPlan,
    follow,
    host_rss_mb,
    run_trial,
    trial_dir,
    trial_recipe,
)
from hf_finetune.tasks import check_capabilities
from hf_finetune.training.tracking import environment, study_tensorboard_dir, study_tracking

logger = logging.getLogger(__name__)


class NoTrialCompleted(UserError):
    """The search ran and no trial completed: exit 1 (the command worked; its result is missing)."""

    exit_code = 1


@dataclass
class SearchResult:
    out_dir: Path
    study_name: str
    storage: str
    metric: str
    direction: str
    best_value: float | None
    best_params: dict[str, Any] | None
    best_dir: Path | None
    states: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the failed trials' errors, in trial order

    def none_completed(self) -> str | None:
        """What to say when trials ran and none completed (every one failed or was pruned), else None."""
        if self.best_value is not None or not self.states:
            return None
        total = sum(self.states.values())
        summary = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items()))
        first = f"; the first failed with: {self.errors[0]}" if self.errors else ""
        return (f"tune: none of the {total} trials completed ({summary}){first}. {self.out_dir / 'trials.csv'} "
                "lists each trial's error: fix the recipe or the search space, and run tune again")


def load_search_recipe(path: str | os.PathLike, overrides: list[str]) -> tuple[Any, dict[str, Any]]:
    """The validated recipe (search section included) and its raw mapping with the overrides applied."""
    from hf_finetune.capability_checks import RECIPE_CHECKS
    from hf_finetune.recipe.loading import apply_overrides, read_yaml
    from hf_finetune.recipe.validation import validate_recipe

    raw = read_yaml(path)
    try:
        raw = apply_overrides(raw, overrides)
    except RecipeError as exc:
        raise RecipeError(exc.problems, str(path)) from None
    return validate_recipe(raw, str(path), overrides, checks=RECIPE_CHECKS), raw


CLAIM_WAIT_S = 30  # how long a worker that lost trial 0's claim waits for the winner to enqueue it


def enqueue_baseline(study: Any, storage: Any, created: bool, space: dict[str, Any], values: dict[str, Any]) -> bool:
    """Trial 0 of a new study: the recipe's own values (search.baseline_trial), where the space can take them.

    Enqueued once per study, by the worker that wins the study's claim in the database (`claim_trial_zero`).
    Checking for trials first is not enough: a worker that opens a new shared study a moment after another
    created it finds it empty too, and both enqueued (CI saw trial 0 and trial 1 both the baseline).

    Returns:
        True when this command enqueued trial 0.
    """
    if not (created or not study.trials):  # a study with trials: trial 0 was decided when it began
        return False
    params, misses = baseline_params(space, values)
    if misses:
        logger.info("Trial 0 is not the recipe's defaults: the space cannot take the run's own value of %s "
                    "(set search.baseline_trial: false to silence this)", ", ".join(misses))
        return False
    if not claim_trial_zero(storage, study.study_name):
        # Another worker holds the claim: wait until its trial 0 is in the study, or this worker's first ask
        # could take number 0 from the sampler and push the baseline to trial 1.
        deadline = time.monotonic() + CLAIM_WAIT_S
        while not study.get_trials(deepcopy=False) and time.monotonic() < deadline:
            time.sleep(0.2)
        return False
    try:
        study.enqueue_trial(params, user_attrs={"baseline": "the recipe's defaults"})
    except BaseException:
        release_trial_zero(storage, study.study_name)  # the next command claims it again
        raise
    logger.info("Trial 0: the recipe at its own defaults (%s), so the best trial is never below one default "
                "run on validation", ", ".join(f"{k}={v}" for k, v in params.items()))
    return True


def resolve_objective(recipe: Any, selected: str | None) -> tuple[str, str]:
    """(metric, direction): search.objective, else the selection metric one run of the recipe uses.

    `selected`: that run's training.metric_for_best_model (search/defaults.run_values: the recipe's own,
    the data-aware f1 on imbalanced classes, or the house default).
    """
    from hf_finetune.metrics.names import BUNDLED_METRICS, LOWER_IS_BETTER

    objective = recipe.search.objective
    metric = objective.metric or selected or BUNDLED_METRICS.get(recipe.metrics[0], ("loss",))[0]
    metric = metric.removeprefix("eval_").removeprefix("validation_")
    # losses, and errors such as regression's rmse and mae, are minimised
    direction = objective.direction or ("minimize" if metric.endswith("loss") or metric in LOWER_IS_BETTER
                                        else "maximize")
    return metric, direction


def describe(search: Any) -> dict[str, str]:
    sampler = (f"TPE sampler, seed {search.sampler.seed}, {search.sampler.startup_trials} random startup trials"
               if search.sampler.type == "tpe" else f"random sampler, seed {search.sampler.seed}")
    pruner = {"successive_halving": "asynchronous successive halving pruner (ASHA), reduction factor "
                                    f"{search.pruner.reduction_factor}",
              "hyperband": f"Hyperband pruner, reduction factor {search.pruner.reduction_factor}",
              "median": "median pruner", "none": "no pruning"}[search.pruner.type]
    return {"sampler": sampler, "pruner": pruner}


def delayed_reports(recipe: Any) -> str | None:
    """Why the pruner hears nothing early, where the recipe delays its evaluations (`training.eval_delay` > 0)
    and the search prunes; None otherwise. An ordinary run's resolved recipe.yaml carries the data-aware delay
    (training/data_aware.evaluation_delay: 1.5, the first epoch not evaluated), and a search started from that
    file keeps it as the author's value: every trial then trains past its first epoch before the pruner can
    stop it."""
    delay = float(recipe.training.get("eval_delay") or 0)
    if recipe.search.pruner.type == "none" or delay <= 0:
        return None
    unit = "steps" if recipe.training.get("eval_strategy") == "steps" else "epochs"
    return (f"training.eval_delay {delay:g}: no trial is evaluated, so none can be pruned, before {delay:g} {unit} "
            "of its run (a resolved recipe.yaml carries the data-aware 1.5: the first epoch not evaluated); set "
            "training.eval_delay: 0 for the pruner to judge from the first evaluation")


def tune(path: str | os.PathLike, overrides: list[str] | None = None, *, trials: int | None = None,
         timeout: str | float | None = None) -> SearchResult | None:
    """Runs (or continues) the recipe's hyperparameter search; returns its result on rank 0, None elsewhere.

    Args:
        path: the recipe file (its `search:` section, or the default space).
        overrides: `dotted.key=value` overrides, for the recipe and its search section alike.
        trials: the study's total number of trials (default: search.trials).
        timeout: this command's wall time (default: search.timeout); no trial starts after it.

    Raises:
        UserError: RecipeError for the recipe and the search section (before any trial runs), or what
            makes the search impossible (storage, output folder, unsupported launch).
    """
    from hf_finetune.recipe.schema import seconds
    from hf_finetune.training.arguments import check_training_arguments

    optuna = import_optuna()
    recipe, raw = load_search_recipe(path, list(overrides or []))
    check_training_arguments(recipe)
    if recipe.self_training is not None:  # a trial's pruning would see each round restart its evaluations
        raise RecipeError([Problem("self_training", "hf-finetune tune does not search self-training recipes; "
                                   "tune the labelled run, then self-train with its best settings")], str(path))
    check_capabilities(recipe, "tune")
    search = recipe.search
    budget = trials if trials is not None else search.trials
    try:
        timeout_s = seconds(timeout) if timeout is not None else seconds(search.timeout) if search.timeout else None
    except ValueError as exc:
        raise RecipeError([Problem("--timeout" if timeout is not None else "search.timeout", str(exc))],
                          str(path)) from None
    out_dir = Path(recipe.output.dir)
    guard_search_dir(out_dir)
    from hf_finetune.preflight import preflight

    preflight(recipe)  # data, model, metrics: once, before any trial and before loading anything
    # What one ordinary run trains with: trial 0, the centre of the default space, and the objective.
    values = run_values(recipe, [*(search.space or default_space(recipe)), "training.metric_for_best_model",
                                 *STRATEGY_KEYS])
    recipe, raw = pin_strategy(recipe, raw, values)
    space, is_default = resolve_space(recipe, values)
    if is_default:
        problems = endpoint_problems(raw, space, str(path))
        if problems:
            raise RecipeError(problems, str(path))
    metric, direction = resolve_objective(recipe, values.get("training.metric_for_best_model"))
    plan = TrialPlan({k: v for k, v in raw.items() if k != "search"}, str(path), out_dir, metric)
    ranks.start_process_group(int(recipe.training.get("ddp_timeout", 1800)))
    if not ranks.is_main():
        follow(plan)
        return None

    check_writable(out_dir)
    url = storage_url(search, out_dir)
    name = search.study_name or Path(path).stem
    if is_default:
        sys.stdout.write("# No search.space in the recipe: searching the default fine-tuning space\n"
                         + space_yaml(space))
        sys.stdout.flush()
    study, storage, created = open_study(search, url, name, direction)
    if search.baseline_trial:
        enqueue_baseline(study, storage, created, space, values)
    done = finished_trials(study)
    settings = describe(search)
    delayed = delayed_reports(recipe)
    if delayed:
        logger.warning("%s", delayed)
    report_to = recipe.training.get("report_to")
    tensorboard = study_tensorboard_dir(report_to, out_dir)  # one sub-folder per trial
    logger.info("Study '%s' in %s: %d trials finished, budget %d%s; objective: %s validation %s; %s; %s; %d "
                "process(es)", name, shown_url(url), done, budget,
                f", timeout {timeout_s:.0f}s" if timeout_s else "", direction, metric, settings["sampler"],
                settings["pruner"], ranks.world_size())

    def objective(trial: Any) -> float:
        values = suggest(trial, space)
        folder = trial_dir(out_dir, trial.number)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())  # which worker ran it, when several share the study
        trial.set_user_attr("folder", str(folder.resolve()))
        logger.info("Trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in values.items()))
        try:
            recipe_n = trial_recipe(plan, values, trial.number)  # before the broadcast: invalid = failed here
        except RecipeError as exc:
            trial.set_user_attr("error", str(exc))
            raise TrialFailed(str(exc)) from None
        ranks.broadcast({"number": trial.number, "values": values})
        logs = environment("TENSORBOARD_LOGGING_DIR", str(tensorboard / folder.name)) if tensorboard else nullcontext()
        try:
            with logs:
                return run_trial(plan, recipe_n, trial, trial.number)
        except (TrialFailed, SearchStopped) as exc:
            trial.set_user_attr("error", str(exc).splitlines()[0])
            raise
        finally:
            trial.set_user_attr("host_rss_mb", host_rss_mb())

    def after_trial(study: Any, frozen: Any) -> None:
        value = f"validation {metric} {frozen.value:.4f}" if frozen.value is not None else ""
        logger.info("Trial %d %s %s", frozen.number, frozen.state.name.lower(), value)
        with search_lock(out_dir):  # other workers on this machine may be copying a trial into best/
            if not search.keep_trials:
                # One snapshot for both the best and the finished: a trial finishing meanwhile in another
                # worker is either in it (and may be the best) or left alone.
                snapshot = study.get_trials(deepcopy=False)
                complete = [t for t in snapshot if t.state.name == "COMPLETE"]
                keep = {best_of(complete, study.direction).number} if complete else set()
                for t in snapshot:
                    if t.number not in keep and t.state.name in ("COMPLETE", "PRUNED", "FAIL") \
                            and t.user_attrs.get("host") == socket.gethostname():
                        remove_trial_folder(t.user_attrs.get("folder"))
            write_trials_csv(study, out_dir, metric)  # after every trial: a killed search keeps its table

    if done >= budget:
        logger.info("The study already has %d finished trials (budget %d): raise --trials to run more", done, budget)
    else:
        callbacks = [optuna.study.MaxTrialsCallback(budget, states=tuple(
            getattr(optuna.trial.TrialState, s) for s in ("COMPLETE", "PRUNED", "FAIL"))), after_trial]
        with study_tracking(report_to, study, out_dir, created):  # MLflow: the trials' runs nest in the study's
            study.optimize(objective, timeout=timeout_s, catch=(TrialFailed,), callbacks=callbacks,
                           gc_after_trial=True)
    ranks.broadcast(None)  # the other ranks leave their loop
    return report(study, space, out_dir, metric, direction, url, settings)


def report(study: Any, space: dict[str, Any], out_dir: Path, metric: str, direction: str, url: str,
           settings: dict[str, Any]) -> SearchResult:
    """Writes trials.csv, the plots and the best model folder; logs the outcome."""
    from hf_finetune.search.space import decode_params

    optuna = import_optuna()
    with search_lock(out_dir):  # several workers on this machine may end at once
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial is not "still running"
        files = [write_trials_csv(study, out_dir, metric).name, *write_plots(study, out_dir)]
        running = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
        if running:
            # Another worker is still training: the last one to finish publishes best/, once.
            logger.info("Not publishing best/: trial(s) %s still running in other workers; the last worker to "
                        "finish publishes it (or run this command again once they have stopped)",
                        ", ".join(map(str, running)))
            best_dir = None
        else:
            best_dir = publish_best(study, space, out_dir, metric, settings)
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    best = best_of(complete, study.direction) if complete else None
    errors = [str(t.user_attrs.get("error") or "unknown error") for t in study.trials if t.state.name == "FAIL"]
    result = SearchResult(out_dir, study.study_name, shown_url(url), metric, direction,
                          best.value if best else None, decode_params(best.params, space) if best else None,
                          best_dir, states, files, errors)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    if best is not None:
        logger.info("Search done: %d trials (%s) | best trial %d: validation %s %.4f | %s | %s", len(study.trials),
                    summary, best.number, metric, best.value,
                    ", ".join(f"{k}={v}" for k, v in result.best_params.items()), best_dir or "best/ not written by this worker")
        if "baseline" in best.user_attrs:
            logger.warning("The search found nothing better in %d trials: the best is trial %d, the recipe at its own "
                           "defaults", len(study.trials), best.number)
    else:
        logger.warning("Search done: %d trials (%s), none completed", len(study.trials), summary)
    pruned = pruned_at(study)
    if pruned:
        logger.info("Pruned: %s", pruned)
    return result


def pruned_at(study: Any) -> str:
    """Which share of the trials was pruned at which evaluation ("3 of 8 (38%) at evaluation 1, ..."), and
    the learning onset pruning waited for (search/onset.py)."""
    from hf_finetune.search.onset import learning_onset

    at: dict[int, int] = {}
    for t in study.trials:
        if t.state.name == "PRUNED":
            rung = t.user_attrs.get("pruned_at") or t.last_step or 0
            at[rung] = at.get(rung, 0) + 1
    if not at:
        return ""
    total = len(study.trials)
    shares = ", ".join(f"{n} of {total} ({n / total:.0%}) at evaluation {rung}" for rung, n in sorted(at.items()))
    onset, why = learning_onset(study)
    return f"{shares}; no trial was pruned before evaluation {onset} ({why})" if onset else shares
