"""`rank.by: finetune`: the shortlist decided by fine-tuning, with successive halving in a budget.

Frozen-feature scores rank how separable a backbone's features are, not how well it fine-tunes: on
300 digits a random-init EfficientNet-Lite0 outscored the ImageNet one by LogME and k-NN, then
fine-tuned to 0.11 accuracy against 0.99 (issue #31). So the ranking's last word can be fine-tuning:

    shortlist   every candidate, or the `rank.shortlist` best by the frozen score `rank.shortlist_by`
                plus every untrained candidate (`pretrained: false`: frozen scores cannot judge those)
    training    each an ordinary run of the recipe (its data-aware defaults, its own folder), through
                tune's trial runner (search/trials.py), but for what a pretrained candidate's run found out
                about the data alone: once a mirror check turns flips off, later runs take it (`data_verdicts`)
    halving     synchronous successive halving in `rank.budget` full runs (`rung_plan`): every
                candidate trains the same share of its run and is evaluated there, by what its run would give
                if it ended there (its best evaluation so far, where it keeps its best checkpoint, as a
                finished run's value is: search/trials.PauseAt.delivered), then the best 1 in
                `rank.reduction_factor` (and any that tie with the last of them: `kept_count`) resume from
                their checkpoints to the next share, and so on. All
                candidates are compared at the same point of their runs, and the whole costs at most the
                budget (below): fine-tuning each candidate in full, one after another, cost 0.94-1.05x fine-tuning
                them all (benchmarks/README.md). As `tune` waits for learning onset (search/onset.py), no
                candidate is dropped at a rung where fewer have learned than go on (beaten the trivial model
                by the guard's margin and beyond what guessing reaches by luck: `learned` below): a place
                would go to one at chance over others at chance. It waits one rung: a candidate still at
                chance a rung after another first learned stops (without it, one fast network and four that
                never learn would all train to the last rung).
                On 20 digits every network sat at chance
                after one epoch, and halving there kept the random-init one (0.100) over two pretrained ones
                (0.086, 0.089); on 300 digits at 7% of a run Lite2 sat at 0.171, Lite0 at 0.130 (guessing
                reaches 0.1375 there one time in 40) and three at 0.100: Lite0 took the second place, and
                Lite2, the best network fine-tuned, stopped at the next rung on a dip
    budget      a cap, not a plan only: waiting and ties train more candidates than the plan counted, and what
                they spend comes off the later rungs (`affordable_share`): a rung the budget cannot pay in full
                ends where it runs out, and halving stops there with a warning that names the budget the plan
                needed (`plan_needs`). Before, the cap was the plan's: on 300 digits the wait at 7% took five
                networks to 20% and two to 60%, 1.80 full runs at rank.budget 1, and a recipe whose candidates
                never learn trained every one to the last rung
    order       the candidates by the rung they reached, then the validation metric there, then those
                not fine-tuned (by the frozen score), and last those fine-tuned whose evaluations never
                beat the trivial model by the collapse guard's margin and what guessing reaches by luck on
                the validation rows (metrics/baseline.chance_figure; `learned: false`); where none
                learned, by value alone, with a warning. With a validation-loss objective there is no
                trivial figure, and nothing is marked. The winner's folder is kept where its run finished
                (a budget that reaches the whole run); the others, and paused runs' checkpoints, removed

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

from hf_finetune.errors import Problem, RecipeError, UserError

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


# rank.shortlist defaults to every candidate. Frozen scores are a poor filter before fine-tuning: at 1,000 digits
# (benchmarks/README.md, "Ranking backbones") LogME's order was anti-correlated with the fine-tuned one (weighted
# tau -0.811), a shortlist of 3 by it left out the network that fine-tuned best, and the mode's order came out at
# tau -0.269; with every candidate fine-tuned in the same budget, +0.628, for 1,195 s instead of 1,052 s (the
# budget bounds the training; each more candidate adds its setup and the first rung's share).
def shortlist(rows: list[dict[str, Any]], by: str, size: int | None) -> list[dict[str, Any]]:
    """The `size` best rows by the frozen score `by` (pretrained ones; None: all), then every untrained row.
    Without frozen scores (rank.frozen_scores), every row in the candidates' order."""
    pretrained = [r for r in rows if not r["untrained"]]
    if all(by in r["scores"] for r in pretrained):
        pretrained.sort(key=lambda r: r["scores"][by], reverse=True)
    return pretrained[:size] + [r for r in rows if r["untrained"]]


def rung_plan(candidates: int, reduction_factor: int, budget: float) -> list[float]:
    """The share of a full run each candidate still in has trained by the end of each rung.

    Rung k keeps ceil(n / eta^k) candidates (down to one) and ends at a * eta^k of a run; the total,
    sum over rungs of candidates x the rung's added share, is a x C, and `a` spends `budget` full runs,
    but no rung goes past the whole run (then the cost is under the budget). E.g. 4 candidates, eta 3,
    budget 1: C = 4 x 1 + 2 x (3 - 1) + 1 x (9 - 3) = 14, so rungs at 1/14, 3/14 and 9/14 of a run (7%, 21%, 64%).
    """
    counts = [candidates]
    while counts[-1] > 1:
        counts.append(math.ceil(counts[-1] / reduction_factor))
    total = sum(n * (reduction_factor ** k - (reduction_factor ** (k - 1) if k else 0)) for k, n in enumerate(counts))
    first = min(budget / total, 1.0 / reduction_factor ** (len(counts) - 1))
    return [min(1.0, first * reduction_factor ** k) for k in range(len(counts))]


def plan_cost(candidates: int, reduction_factor: int, shares: list[float]) -> float:
    """Full runs that `rung_plan`'s shares cost when every rung drops what it may."""
    return plan_needs(candidates, 0.0, shares, reduction_factor)


# A rung the budget can pay only a sliver of is not run: its evaluation would tell little more than the one before,
# at the cost of every candidate's resume (setup, and for images the data's first pass). Under a quarter of the
# rung's planned step is that sliver.
MIN_RUNG_STEP = 0.25


def affordable_share(current: list[float], planned: float, left: float) -> float:
    """The share of a run the candidates at `current` shares can all train to with `left` full runs: `planned`
    where that is paid in full, else the share where the budget runs out (those furthest behind catch up first,
    as water fills the lowest ground)."""
    if sum(max(0.0, planned - s) for s in current) <= left + 1e-9:
        return planned
    behind = sorted(current)
    level = behind[0]
    for count in range(1, len(behind) + 1):
        level = (left + sum(behind[:count])) / count  # the first `count` raised to one level with what is left
        if count == len(behind) or level <= behind[count]:
            break
    return min(level, planned)


def plan_needs(alive: int, current: float, shares: list[float], reduction_factor: int) -> float:
    """Full runs that `alive` candidates at share `current` need to go through the rungs `shares` still ahead of
    them, halving as planned (the budget a warning names when the cap stops halving early)."""
    cost, before = 0.0, current
    for share in shares:
        cost += alive * max(0.0, share - before)
        before, alive = max(before, share), math.ceil(alive / reduction_factor)
    return cost


def check_finetune(recipe: Any, num_processes: int) -> None:
    """What refuses rank.by finetune, before any work (and before an earlier rank's folder is touched).

    Raises:
        UserError: several processes. RecipeError: training.save_strategy best.
    """
    if num_processes > 1:
        raise UserError("rank.by: finetune trains in one process; run `hf-finetune rank` without accelerate "
                        "launch, or search `model.name` choices with `hf-finetune tune`")
    if str(recipe.training.get("save_strategy")) == "best":
        raise RecipeError([Problem("training.save_strategy", "best saves only a new best checkpoint, and rank.by: "
                                   "finetune pauses each run at a checkpoint of its own: use epoch or steps")],
                          recipe.source)


def claim_folder(recipe: Any, out_dir: Path) -> None:
    """rank's fine-tuning folder, emptied. An earlier rank's winner (a finished run: a model someone may use) is
    replaced only where output.overwrite says so; what else an earlier rank left (the runs of a rank that failed
    or was stopped: rank does not resume them) is cleared, and the log says so.

    Raises:
        OutputExistsError: the folder holds an earlier rank's finished winner, and output.overwrite is false.
    """
    from hf_finetune.errors import OutputExistsError
    from hf_finetune.outputs.folder import RUN_FILE

    folder = out_dir / FINETUNE_DIR
    if not folder.is_dir():
        return
    kept = sorted(p.parent for p in folder.glob(f"*/*/{RUN_FILE}"))
    if kept and not recipe.output.overwrite:
        raise OutputExistsError(f"{kept[0]} holds the model an earlier rank fine-tuned (its winner); rank into another "
                                "folder (--output-dir, rank.output_dir), move it, or set output.overwrite: true to "
                                "replace it")
    if any(folder.iterdir()):
        logger.info("rank.by finetune: clearing what an earlier rank left in %s%s", folder,
                    " (its winner's model: output.overwrite)" if kept else "")
    shutil.rmtree(folder)


def finetune_rows(recipe: Any, rows: list[dict[str, Any]], out_dir: Path, num_processes: int,
                  trivial: float | None = None, chance: float | None = None) -> dict[str, Any]:
    """Fine-tunes the shortlist of `rows` (each with its "spec") and adds `scores["finetune"]` and a
    `finetune` entry (state, share of its run, evaluations, seconds, folder) to each; returns the settings for
    rank.json. `trivial`: the trivial model's validation figure of the objective (None: none; nothing is
    marked as not learned); a candidate has learned where it beats that by the collapse guard's margin, and
    `chance` too where given (what guessing reaches by luck: metrics/baseline.chance_figure)."""
    from hf_finetune.metrics.baseline import margin_bar
    from hf_finetune.search.trials import TrialPlan, trial_dir
    from hf_finetune.search.tune import resolve_objective

    check_finetune(recipe, num_processes)
    settings = recipe.rank
    metric, direction = resolve_objective(recipe, recipe.training.get("metric_for_best_model"))
    if metric.endswith("loss"):
        trivial = chance = None  # the trivial model's figure is of the metrics, not of the loss
    sign = 1.0 if direction == "maximize" else -1.0
    bar = None if trivial is None else margin_bar(trivial, sign)  # what learning beats
    if bar is not None and chance is not None:
        bar = max(bar, chance) if sign > 0 else min(bar, chance)
    # The author's keys only: each candidate's run decides its own data-aware defaults (the few-label probe,
    # class weights, the epochs), as an ordinary run of the recipe would; the resolved recipe would pin them.
    raw = recipe.user_dict()
    for section in ("rank", "search"):
        raw.pop(section, None)
    folder = out_dir / FINETUNE_DIR
    plan = TrialPlan(raw, recipe.source, folder, metric)
    chosen = shortlist(rows, settings.shortlist_by, settings.shortlist)
    shares = rung_plan(len(chosen), settings.reduction_factor, settings.budget)
    picked = ("every candidate" if settings.shortlist is None
              else f"the best {settings.shortlist} by {settings.shortlist_by}, and every untrained one")
    logger.info("rank.by finetune: fine-tuning %d of %d candidates (%s), "
                "objective validation %s; successive halving 1 in %d at %s of a run (budget %g full runs, about "
                "%.2f planned)", len(chosen), len(rows), picked, metric,
                settings.reduction_factor, ", ".join(f"{s:.0%}" for s in shares), settings.budget,
                plan_cost(len(chosen), settings.reduction_factor, shares))

    def learned(values: list[float]) -> bool:  # beyond the collapse guard's margin, and beyond luck
        return any(sign * (v - bar) > 0 for v in values)

    for number, row in enumerate(chosen):
        # share: of its run trained; rung: the last rung it was in (what orders the candidates: a run that
        # finished before its rung's share, then pruned there, stays behind the ones kept)
        row["finetune"] = {"folder": str(trial_dir(folder, number)), "number": number, "state": "waiting",
                           "value": None, "share": 0.0, "rung": 0, "rung_share": shares[0], "evaluations": [],
                           "seconds": 0.0}
    alive = list(chosen)
    onset = False  # a candidate has learned at an earlier rung: halving has waited its one rung for the others
    shared: dict[str, Any] = {}  # what the first run found out about the data, given to the later ones
    reached: list[float] = []  # the rungs run, at the shares they ended (the cap may end one early)
    ran_out = None  # where the budget ended halving before the plan's last rung: {share, needed}
    for rung, planned in enumerate(shares):
        if len(alive) == 1:  # the others failed: the last one goes to where the budget ends
            rung, planned = len(shares) - 1, shares[-1]
        # Every run still going sits at the same share (each rung trains them all to one): a finished one (a run
        # too short to pause) needs nothing more
        current = [r["finetune"]["share"] for r in alive if r["finetune"]["state"] != "complete"]
        before = max(current, default=planned)
        share = affordable_share(current, planned, settings.budget - _spent(chosen)) if current else planned
        if current and share < planned:  # the budget ends in this rung
            sliver = share - before < MIN_RUNG_STEP * (planned - before) - 1e-9
            ran_out = {"share": before if sliver else share, "needed": _spent(chosen) + plan_needs(
                len(current), before, shares[rung:], settings.reduction_factor)}
            if sliver:
                break
        reached.append(share)
        for row in alive:
            row["finetune"].update(rung=rung, rung_share=share)
            if row["finetune"]["state"] == "complete":  # a run shorter than its rung's steps finished already
                continue
            _train_to(row, share, plan, metric, settings.finetune_epochs, shared)
            if not shared and row["spec"].pretrained and row["finetune"]["state"] != "failed":
                shared = data_verdicts(row)
        alive = [r for r in alive if r["finetune"]["state"] != "failed"]
        if rung == len(shares) - 1 or not alive or ran_out:
            break
        alive.sort(key=lambda r: -sign * _finite(r["finetune"]["value"], sign))
        keep = kept_count(alive, settings.reduction_factor, sign)
        beat = sum(learned([_finite(r["finetune"]["value"], sign)]) for r in alive) if trivial is not None else keep
        if beat < keep and not (onset and beat):
            # A place that goes on would go to a candidate at chance, chosen over others at chance by noise
            logger.info("rank.by finetune: %d of %d candidates beat chance (validation %s above %.4f; the trivial "
                        "model's %.4f) at %.0f%% of their runs, fewer than the %d that go on; none is dropped here (the "
                        "order of those at chance is noise)", beat, len(alive), metric, bar, trivial, 100 * share, keep)
            alive.sort(key=lambda r: r["finetune"]["number"])
            onset = onset or beat > 0
            continue
        if beat < keep:  # a rung's wait given already: still at chance a rung after another learned is evidence
            logger.info("rank.by finetune: %d of %d candidates beat chance (validation %s above %.4f) at %.0f%% of "
                        "their runs; the others were waited for one rung after the first learned, and stop here",
                        beat, len(alive), metric, bar, 100 * share)
            keep = beat
        onset = onset or beat > 0
        ties = max(0, keep - math.ceil(len(alive) / settings.reduction_factor))  # kept beyond 1 in reduction_factor
        if ties:
            logger.info("rank.by finetune: %d candidates tie at the cut (validation %s %s at %.0f%% of their runs); "
                        "they go on together", ties + 1, metric, alive[keep - 1]["finetune"]["value"], 100 * share)
        for row in alive[keep:]:
            row["finetune"]["state"] = "pruned"
            logger.info("rank.by finetune: %s stops at %.0f%% of its run (validation %s %s)", row["name"],
                        100 * share, metric, row["finetune"]["value"])
        alive = sorted(alive[:keep], key=lambda r: r["finetune"]["number"])  # the shortlist's order
    if ran_out:
        logger.warning("rank.by finetune: rank.budget %g ran out at %.0f%% of the runs (%d candidates still in): the "
                       "rungs so far trained more than the plan counted (waits for learning, ties at a cut, runs too "
                       "short to pause, which count whole). They are ordered by their validation there, weaker "
                       "evidence than the plan's rungs (%s of a run), which needed about %.2f full runs from here; a "
                       "larger rank.budget trains further, and also moves every rung later", settings.budget,
                       100 * ran_out["share"], len(alive), ", ".join(f"{s:.0%}" for s in shares), ran_out["needed"])
    for row in chosen:  # every figure a run reached: whether it learned is judged on its best
        entry = row["finetune"]
        if entry["value"] is not None and math.isfinite(entry["value"]):
            row["scores"]["finetune"] = entry["value"]
        if trivial is not None and entry["state"] != "failed":
            entry["learned"] = learned([e["value"] for e in entry["evaluations"] if e["value"] is not None])
    none_learned = trivial is not None and not any(r["finetune"].get("learned") for r in chosen)
    if none_learned:  # then not learning tells no candidate from another: the order is by value alone
        logger.warning("rank.by finetune: no candidate learned (validation %s above %.4f: the trivial model's %.4f "
                       "by the guard's margin, and what guessing reaches by luck): the order after fine-tuning is not "
                       "evidence; give it more (rank.budget, rank.finetune_epochs)", metric, bar, trivial)

    def key(row: dict[str, Any]) -> tuple:
        entry = row.get("finetune")
        if not entry:
            group = 1
        elif entry["state"] == "failed":
            group = 3
        else:
            group = 2 if entry.get("learned") is False and not none_learned else 0
        value = row["scores"].get("finetune")
        reached = -entry["rung"] if entry else 0
        # At equal evidence a pretrained network goes first: on 300 digits Lite1 and the random-init Lite0 both sat
        # at 0.100 when halving stopped them, and the random one's higher LogME put it above. Among those that did
        # not learn, figures at chance are no evidence at all: pretrained first whatever they are.
        return (group, reached, group == 2 and row["untrained"], -sign * value if value is not None else math.inf,
                row["untrained"], -row["scores"].get(settings.shortlist_by, 0.0))  # not fine-tuned: by the frozen score

    rows.sort(key=key)
    tied = [] if none_learned or direction != "maximize" else ties_after_finetuning(
        rows, metric, int(recipe.training.get("seed", 42)))
    for row in rows:  # predictions are arrays: not for rank.json
        row.pop("_predictions", None)
        row.pop("_delivered", None)
    spent = _spent(chosen)
    if all(r["finetune"]["state"] == "failed" for r in chosen):
        raise UserError(f"rank.by: finetune: every shortlisted candidate failed to fine-tune; see {folder}")
    winner = rows[0]["finetune"]
    for row in rows:  # a finished winner's model is worth its disk; nothing else is (paused runs hold checkpoints)
        entry = row.get("finetune")
        if entry and not (entry is winner and entry["state"] == "complete"):
            shutil.rmtree(entry["folder"], ignore_errors=True)
            entry["folder"] = None
    if winner["folder"] is None:
        shutil.rmtree(folder, ignore_errors=True)  # no model kept: nothing left behind
    return {"metric": metric, "direction": direction, "shortlist_by": settings.shortlist_by,
            "shortlist": settings.shortlist, "reduction_factor": settings.reduction_factor, "budget": settings.budget,
            "planned_shares": shares, "shares": reached, "spent": spent, "budget_ran_out": ran_out,
            "finetune_epochs": settings.finetune_epochs,
            "winner_folder": winner["folder"], "winner_share": winner["share"], "trivial": trivial, "learned_above": bar,
            "none_learned": none_learned, "tied": tied}


def ties_after_finetuning(rows: list[dict[str, Any]], metric: str, seed: int) -> list[tuple[int, float]]:
    """(index in `rows`, share) of the candidates the leader (`rows[0]`) is not surely ahead of after fine-tuning:
    those stopped at the same rung that learned, whose validation predictions, rescored with the leader's on the
    same bootstrap resamples, put the leader ahead on fewer than confidence.TIE_SHARE of them. [] where the leader's
    run finished (no predictions here) or the metric is not a function of the predicted classes."""
    import numpy as np

    from hf_finetune.rank.confidence import finetuned_ties

    leader = rows[0].get("finetune")
    if not leader:
        return []
    peers = [i for i, r in enumerate(rows[1:], start=1)
             if r.get("finetune") and r["finetune"]["rung"] == leader["rung"] and r["finetune"].get("learned") is not False
             and r["finetune"]["state"] != "failed"]
    if not peers:
        return []
    if rows[0].get("_delivered") is None:
        logger.info("rank.by finetune: no tie is checked: the leader's run %s, so its validation predictions are not "
                    "here", "finished" if leader["state"] == "complete" else "kept none of the evaluation behind its value")
        return []
    truth = np.asarray(rows[0]["_delivered"][1])
    unpaired = [i for i in peers if rows[i].get("_delivered") is None
                or not np.array_equal(np.asarray(rows[i]["_delivered"][1]), truth)]
    if unpaired:  # the same validation rows in the same order, or no pairing
        logger.info("rank.by finetune: %s left out of the tie check: no validation predictions row by row beside the "
                    "leader's", ", ".join(rows[i]["name"] for i in unpaired))
    peers = [i for i in peers if i not in unpaired]
    if not peers:
        return []
    ties = finetuned_ties([rows[0]["_delivered"], *(rows[i]["_delivered"] for i in peers)], metric,
                          rows[0]["num_classes"], seed)
    if ties:
        logger.info("rank.by finetune: %s is not surely ahead of %s (validation %s on paired resamples)",
                    rows[0]["name"], ", ".join(f"{rows[peers[k - 1]]['name']} (ahead on {share:.0%})" for k, share in ties),
                    metric)
    return [(peers[k - 1], share) for k, share in ties]


def data_verdicts(row: dict[str, Any]) -> dict[str, Any]:
    """Recipe values that `row`'s run found out about the data alone, for the later candidates' runs to take
    instead of asking again; {} where it found none (or kept no record of its decisions).

    The mirror check asks whether mirroring an image changes its class: a question about the images, which a
    backbone's features only serve to answer (training/mirror.py), at the cost of a forward pass over a sample
    of train and twice over validation (24 s of a 100 s Lite0 run on 300 digits, 25-60 s per EfficientNet on
    1,000). Only a finding carries over: mirrors that lose their class significantly (flips off). A check that
    finds no loss may only lack power (on 300 digits Lite0's probe saw 29 images go wrong and 17 right, p =
    0.052, where the sharper features of other networks turn flips off), so then the next candidate asks again.
    """
    from hf_finetune.outputs.folder import CHECKPOINTS
    from hf_finetune.training.safeguards import recorded_decisions

    # Where no check is made (text, the recipe's own hflip, data_aware off) no flip decision is recorded either.
    decisions = recorded_decisions(Path(row["finetune"]["folder"]) / CHECKPOINTS) or []
    flip = next((d.value for d in decisions if d.key == "augmentation.hflip"), None)
    if flip is None:
        return {}
    logger.info("rank.by finetune: %s's mirror check found that mirroring changes these images' class; every later "
                "candidate's run takes that answer (augmentation.hflip %g) instead of asking again", row["name"], flip)
    return {"augmentation.hflip": flip}


def _train_to(row: dict[str, Any], share: float, plan: Any, metric: str, epochs: float | None,
              shared: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trains `row`'s candidate on to `share` of its run (resuming its checkpoint after the first rung) and
    records where it got: "paused" with the evaluation there, "complete" with the run's selected value, or
    "failed". `shared`: recipe values another candidate's run decided about the data (`data_verdicts`); a run
    keeps the ones it started with when it resumes."""
    from hf_finetune.search import trials  # read at call time: the trial runner as the module holds it

    entry, spec = row["finetune"], row["spec"]
    if entry["share"] == 0:
        entry["shared"] = dict(shared or {})
    values = {**entry.get("shared", {}), "model.name": spec.name, "model.pretrained": spec.pretrained}
    if spec.revision is not None:
        values["model.revision"] = spec.revision
    values.update({f"model.{k}": getattr(spec, k) for k in candidate_model_keys(spec)})
    if epochs is not None:
        values["training.num_train_epochs"] = epochs
    started = time.perf_counter()
    try:
        recipe = trials.trial_recipe(plan, values, entry["number"])
        value = trials.run_trial(plan, recipe, None, entry["number"], resume=entry["share"] > 0,
                          pause_at=share if share < 1.0 else None)
        entry.update(state="complete", value=value, latest=None, share=1.0)  # latest: a paused run's own figure
        row["_delivered"] = None  # a finished run's predictions are in its own report, not here
    except trials.RunPaused as stop:  # value: the run's best so far where it keeps its best (PauseAt.delivered)
        entry.update(state="paused", value=stop.value, latest=stop.latest, share=share, step=stop.step,
                     steps=stop.max_steps)
        # The predictions behind the value, for calling ties (rank/confidence.finetuned_ties). A best evaluation
        # from before the run was resumed is one an earlier pause handed on.
        step, predicted, truth = stop.evaluated or (None, None, None)
        seen = row.setdefault("_predictions", {})
        if predicted is not None:
            seen[step] = (predicted, truth)
        row["_delivered"] = seen.get(step)
    except (trials.TrialFailed, RecipeError) as exc:
        entry.update(state="failed", value=None, latest=None, error=str(exc))
        row["_delivered"] = None
        logger.warning("rank.by finetune: %s failed: %s", row["name"], exc)
    entry["seconds"] += time.perf_counter() - started
    trials.release_memory()  # the paused run's trainer lived in the exception's frames, gone only now
    if entry["state"] != "failed":
        entry["evaluations"].append({"share": entry["share"], "value": entry["value"], "latest": entry["latest"]})
    latest = entry["latest"]
    also = f" (this evaluation {latest:.4f})" if latest is not None and latest != entry["value"] else ""
    logger.info("rank.by finetune: %s %s at %.0f%% of its run, validation %s %s%s", row["name"], entry["state"],
                100 * entry["share"], metric, "n/a" if entry["value"] is None else f"{entry['value']:.4f}", also)
    return entry


def kept_count(ranked: list[dict[str, Any]], reduction_factor: int, sign: float) -> int:
    """How many of `ranked` (best first) go on from a rung: 1 in `reduction_factor`, and every one that ties
    with the last of those. Small validation splits make accuracy coarse, and early rungs tie: on 300 digits
    at 7% of a run Lite0 and Lite1 both sat at 0.104 (28 of 269 images), and which one went on was the
    candidates' order (with it, the mode's winner). Halving does not choose between equals."""
    keep = math.ceil(len(ranked) / reduction_factor)
    cut = _finite(ranked[keep - 1]["finetune"]["value"], sign)
    while keep < len(ranked) and _finite(ranked[keep]["finetune"]["value"], sign) == cut and math.isfinite(cut):
        keep += 1
    return keep


def _spent(rows: list[dict[str, Any]]) -> float:
    """Full runs the fine-tuning of `rows` trained so far (a failed run's part not counted)."""
    return sum(r["finetune"]["share"] for r in rows)


def _finite(value: float | None, sign: float) -> float:
    """A rung's value for comparing: a missing or non-finite one is the worst."""
    return value if value is not None and math.isfinite(value) else -sign * math.inf
