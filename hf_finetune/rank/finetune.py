"""`rank.by: finetune`: the shortlist decided by fine-tuning, with successive halving.

Frozen-feature scores rank how separable a backbone's features are, not how well it fine-tunes: on
300 digits a random-init EfficientNet-Lite0 outscored the ImageNet one by LogME and k-NN, then
fine-tuned to 0.11 accuracy against 0.99 (issue #31). So the ranking's last word can be fine-tuning:

    shortlist   the `rank.shortlist` best candidates by the frozen score `rank.shortlist_by`, plus
                every untrained candidate (`pretrained: false`: frozen scores cannot judge those)
    training    each an ordinary run of the recipe (its data-aware defaults, its own folder), through
                tune's trial runner (search/trials.py), best frozen score first
    halving     Optuna's SuccessiveHalvingPruner at every evaluation, as `tune` prunes: a candidate
                behind the ones before it at an evaluation is stopped there, so the cost is about one
                full run for the first candidate plus a fraction for each later one; and, as in
                `tune`, only from the evaluation at which the first candidate beat the trivial model
                (search/onset.py): on 20 digits every network sat at chance after one epoch, and
                halving there kept the random-init one (0.100) over two pretrained ones (0.086, 0.089)
    order       completed candidates by the validation metric after fine-tuning, then pruned ones by
                their last evaluation, then those not fine-tuned (by the frozen score), and last those
                fine-tuned whose best evaluation never beat the trivial model by the collapse guard's
                margin (`learned: false`; a pretrained candidate pruned at chance too); where none
                learned, by value alone, with a warning. With a validation-loss objective there is no
                trivial figure, and nothing is marked. The winner's fine-tuned folder is kept, the
                others' removed

Under several processes this mode is refused: the frozen scores are process-aware, training through
`rank` is not (use `tune` with `model.name` choices there).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from hf_finetune.errors import RecipeError, UserError

logger = logging.getLogger(__name__)

FINETUNE_DIR = "finetune"  # under rank's output folder: one trial folder per fine-tuned candidate
# The model keys that name a candidate; every other model key it holds (its own, or inherited from the recipe:
# rank.INHERITED) is a setting its run must keep (candidate_model_keys)
NAMING_KEYS = ("name", "pretrained", "revision")


def candidate_model_keys(spec: Any) -> list[str]:
    """The model keys besides its name that a candidate's run must be given: the ones it sets or inherits
    (a key left unset, or null, is the recipe's own)."""
    return [k for k in type(spec).model_fields if k not in NAMING_KEYS and k in spec.model_fields_set
            and getattr(spec, k) is not None]


def shortlist(rows: list[dict[str, Any]], by: str, size: int) -> list[dict[str, Any]]:
    """The `size` best rows by the frozen score `by` (pretrained ones), then every untrained row."""
    pretrained = sorted((r for r in rows if not r["untrained"]), key=lambda r: r["scores"][by], reverse=True)
    return pretrained[:size] + [r for r in rows if r["untrained"]]


def finetune_rows(recipe: Any, rows: list[dict[str, Any]], out_dir: Path, num_processes: int) -> dict[str, Any]:
    """Fine-tunes the shortlist of `rows` (each with its "spec") and adds `scores["finetune"]` and a
    `finetune` entry (state, evaluations, seconds, folder) to each; returns the settings for rank.json."""
    from hf_finetune.metrics.baseline import F1_MARGIN
    from hf_finetune.search.onset import LearningOnsetPruner
    from hf_finetune.search.study import import_optuna
    from hf_finetune.search.trials import TrialFailed, TrialPlan, run_trial, trial_dir, trial_recipe
    from hf_finetune.search.tune import resolve_objective

    if num_processes > 1:
        raise UserError("rank.by: finetune trains in one process; run `hf-finetune rank` without accelerate "
                        "launch, or search `model.name` choices with `hf-finetune tune`")
    settings = recipe.rank
    optuna = import_optuna()
    metric, direction = resolve_objective(recipe, recipe.training.get("metric_for_best_model"))
    # The author's keys only: each candidate's run decides its own data-aware defaults (the few-label probe,
    # class weights, the epochs), as an ordinary run of the recipe would; the resolved recipe would pin them.
    raw = recipe.user_dict()
    for section in ("rank", "search"):
        raw.pop(section, None)
    folder = out_dir / FINETUNE_DIR
    plan = TrialPlan(raw, recipe.source, folder, metric)
    chosen = shortlist(rows, settings.shortlist_by, settings.shortlist)
    pruner = LearningOnsetPruner(optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=settings.reduction_factor))  # the first candidate is the reference
    study = optuna.create_study(direction=direction, pruner=pruner)  # in memory: the ranking is one command
    logger.info("rank.by finetune: fine-tuning %d of %d candidates (best %d by %s, and every untrained one), "
                "objective validation %s, successive halving 1 in %d", len(chosen), len(rows), settings.shortlist,
                settings.shortlist_by, metric, settings.reduction_factor)
    for number, row in enumerate(chosen):
        spec = row["spec"]
        values = {"model.name": spec.name, "model.pretrained": spec.pretrained}
        if spec.revision is not None:
            values["model.revision"] = spec.revision
        values.update({f"model.{k}": getattr(spec, k) for k in candidate_model_keys(spec)})
        if settings.finetune_epochs is not None:
            values["training.num_train_epochs"] = settings.finetune_epochs
        trial = study.ask()
        started = time.perf_counter()
        entry: dict[str, Any] = {"folder": str(trial_dir(folder, number))}
        try:
            value = run_trial(plan, trial_recipe(plan, values, number), trial, number)
            study.tell(trial, value)
            entry.update(state="complete", value=value)
        except optuna.TrialPruned:
            last = _last_report(study, trial)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            entry.update(state="pruned", value=last)
        except (TrialFailed, RecipeError) as exc:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            entry.update(state="failed", value=None, error=str(exc))
            logger.warning("rank.by finetune: %s failed: %s", row["name"], exc)
        entry.update(evaluations=trial.user_attrs.get("evaluations"), seconds=time.perf_counter() - started)
        # Every figure the run reached: whether it learned is judged on its best, as the learning onset is
        # (a run keeping its last epoch can end below an evaluation that beat the trivial model).
        entry["reached"] = [*study.trials[trial.number].intermediate_values.values(),
                            *([entry["value"]] if entry["value"] is not None else [])]
        row["finetune"] = entry
        logger.info("rank.by finetune: %s %s, validation %s %s", row["name"], entry["state"], metric,
                    "n/a" if entry["value"] is None else f"{entry['value']:.4f}")
    sign = 1.0 if direction == "maximize" else -1.0
    trivial = _trivial_figure(study)
    for row in rows:  # only fine-tuned candidates have the score (a pruned one: its last evaluation)
        entry = row.get("finetune")
        if entry and entry["value"] is not None and math.isfinite(entry["value"]):
            row["scores"]["finetune"] = entry["value"]
        if not entry:
            continue
        reached = [sign * v for v in entry.pop("reached") if math.isfinite(v)]
        if trivial is not None and entry["state"] != "failed":
            # Beyond the collapse guard's margin (metrics/baseline.py): a random-init network at 0.11 accuracy
            # on 10 balanced classes (chance 0.10) has not learned.
            entry["learned"] = bool(reached) and max(reached) - sign * trivial > F1_MARGIN * max(1.0, abs(trivial))
    # Completed, then pruned, then those not fine-tuned (ordered by the frozen score), then those that were
    # fine-tuned and never left the trivial model's figure: on 300 digits the random-init network, pruned at
    # chance, otherwise ranked above a pretrained network that was not on the shortlist.
    order = {"complete": 0, "pruned": 1, None: 2, "did not learn": 3, "failed": 4}

    none_learned = trivial is not None and not any((r.get("finetune") or {}).get("learned") for r in rows)
    if none_learned:  # then not learning tells no candidate from another: the order is by value alone
        logger.warning("rank.by finetune: no candidate beat the trivial model's validation %s (%.4f): the order after "
                       "fine-tuning is not evidence; fine-tune longer (rank.finetune_epochs)", metric, trivial)

    def group(row: dict[str, Any]) -> int:
        entry = row.get("finetune")
        if not entry:
            return order[None]
        return order["did not learn" if entry.get("learned") is False and not none_learned else entry["state"]]

    def key(row: dict[str, Any]) -> tuple:
        value = row["scores"].get("finetune")
        return (group(row), -sign * value if value is not None else math.inf, -row["scores"][settings.shortlist_by])

    rows.sort(key=key)
    finished = [i for i, r in enumerate(rows) if (r.get("finetune") or {}).get("state") == "complete"]
    if not finished:
        raise UserError(f"rank.by: finetune: no shortlisted candidate finished fine-tuning; see {folder}")
    if finished[0] != 0:  # the winner is a finished model: a pruned run ahead of it has none to keep
        logger.warning("rank.by finetune: %s, pruned, was ahead at its last evaluation; the winner is the best "
                       "candidate that finished, %s", rows[0]["name"], rows[finished[0]]["name"])
        rows.insert(0, rows.pop(finished[0]))
    for row in rows[1:]:  # only the winner's fine-tuned model is worth its disk
        entry = row.get("finetune")
        if entry:
            shutil.rmtree(entry["folder"], ignore_errors=True)
            entry["folder"] = None
    return {"metric": metric, "direction": direction, "shortlist_by": settings.shortlist_by,
            "shortlist": settings.shortlist, "reduction_factor": settings.reduction_factor,
            "finetune_epochs": settings.finetune_epochs, "winner_folder": rows[0]["finetune"]["folder"],
            "trivial": trivial, "none_learned": none_learned}


def _trivial_figure(study: Any) -> float | None:
    """The trivial model's validation figure of the objective, as the learning onset's reference run recorded
    it (the validation split, and so the figure, is the same for every candidate); None where it has none."""
    from hf_finetune.search.onset import TRIVIAL, reference_trial

    reference = reference_trial(study)
    value = reference.user_attrs[TRIVIAL] if reference is not None else None
    return float(value) if isinstance(value, (int, float)) else None


def _last_report(study: Any, trial: Any) -> float | None:
    """The last value a pruned trial reported (its standing when it was stopped)."""
    reported = study.trials[trial.number].intermediate_values
    return float(reported[max(reported)]) if reported else None

