"""Rank candidate backbones for a recipe before any fine-tuning: `hf-finetune rank`.

    features   each candidate's frozen features of train and validation, its own preprocessing, cached
               (not under rank.by finetune of every candidate, where they would decide nothing, unless
               rank.frozen_scores asks)
    scores     LogME, k-NN and linear-probe validation accuracy, H-score
    confidence each score's bootstrap spread; a tie at the top instead of a winner
    finetune   rank.by finetune: the shortlist fine-tuned with successive halving (tune's trial runner)
    report     the ranked table, rank.json, rank.png, and the command that trains the winner

`rank(recipe, candidates)` reads top to bottom: resolve and check every candidate (configs only, so
a candidate that does not fit the task fails before any extraction), extract or read features, score,
report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_finetune.errors import Problem, RecipeError
from hf_finetune.recipe import ModelSpec, Recipe
from hf_finetune.tasks import check_capabilities, task_of

logger = logging.getLogger(__name__)

# Policies of the recipe's own model section that a candidate keeps unless it sets them itself.
INHERITED = ("trust_remote_code", "allow_pickle", "attn_implementation", "attention_dropout", "hidden_dropout",
             "channels_last")


@dataclass
class RankResult:
    rows: list[dict[str, Any]]  # one per candidate, best first
    winner: str  # the best pretrained row of a frozen ranking, the first of a fine-tuned one (rank.frozen_winner)
    command: str  # the line that trains the winner
    output_dir: Path
    record: dict[str, Any]  # rank.json
    tied: list[dict[str, Any]] = field(default_factory=list)  # candidates the leader is not surely ahead of


def resolve_candidates(recipe: Recipe, candidates: list[str | ModelSpec | dict] | None = None
                       ) -> list[ModelSpec]:
    """The candidates as model sections: the command line's, else `rank.candidates`.

    A name is the recipe's model section with that name (pretrained, no revision); a mapping sets
    model keys, and keeps the recipe's own trust_remote_code, allow_pickle and kernel settings
    unless it sets them.

    Raises:
        RecipeError: no candidates, an invalid model section, or the same candidate twice.
    """
    from pydantic import ValidationError

    from hf_finetune.recipe.schema import RankSpec
    from hf_finetune.recipe.validation import _pydantic_problems

    given = candidates if candidates is not None else recipe.rank.candidates
    if not given:
        raise RecipeError([Problem("rank.candidates", "no candidates to rank: list backbones under rank.candidates "
                                   "or pass --candidates A B ...")], recipe.source)
    try:
        parsed = RankSpec(candidates=[c.model_dump(exclude_unset=True) if isinstance(c, ModelSpec) else c
                                      for c in given]).candidates or []
    except ValidationError as exc:
        raise RecipeError(_pydantic_problems(exc, ["rank"]), recipe.source) from None
    base = {k: getattr(recipe.model, k) for k in INHERITED}
    # Keys that apply to the other task are dropped (a text recipe's attention kernel means nothing to timm).
    drop = dict.fromkeys(task_of(recipe).inputs.foreign_model_keys & set(ModelSpec.model_fields))
    specs = [spec.model_copy(update={**{k: v for k, v in base.items() if k not in spec.model_fields_set}, **drop})
             for spec in parsed]
    problems = []
    keys = [(s.name, s.revision, s.pretrained) for s in specs]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            problems.append(Problem(f"rank.candidates.{index}", f"'{key[0]}' is listed twice"))
    if problems:
        raise RecipeError(problems, recipe.source)
    return specs


def rank(recipe: Recipe, candidates: list[str | ModelSpec | dict] | None = None,
         output_dir: str | Path | None = None) -> RankResult:
    """Scores every candidate backbone on the recipe's data and writes rank.json and rank.png.

    Args:
        recipe: a validated recipe; its data, preprocessing, training.seed and `rank` section are used.
        candidates: backbones to rank (names or model sections); default `rank.candidates`.
        output_dir: where the report goes; default `rank.output_dir`, else `<output.dir>-rank`.

    Raises:
        RecipeError, ModelError, DataError: naming the candidate, key, file or column at fault.
    """
    import torch
    from accelerate import PartialState

    from hf_finetune.outputs import check_writable_dir
    from hf_finetune.rank.features import check_fits_task, default_cache_root
    from hf_finetune.rank.report import build_record, train_command, write_report

    started = time.perf_counter()
    from hf_finetune.recipe.sections.rank import rank_problems, scores_frozen

    problems = rank_problems(recipe.rank)
    if problems:
        raise RecipeError(problems, recipe.source)
    check_capabilities(recipe, "rank")
    specs = resolve_candidates(recipe, candidates)
    for spec in specs:
        check_fits_task(recipe, spec)  # every candidate, before any heavy work
    settings = recipe.rank
    cache_root = Path(settings.cache_dir) if settings.cache_dir else default_cache_root(recipe)
    out_dir = Path(output_dir or settings.output_dir or f"{recipe.output.dir}-rank")
    # Before any extraction: where the features and the report go can be written.
    check_writable_dir(out_dir, "--output-dir" if output_dir else "rank.output_dir" if settings.output_dir
                       else "output.dir (rank writes into <output.dir>-rank)")
    frozen = scores_frozen(settings)  # not under rank.by finetune of every candidate, unless asked
    if frozen:  # the feature cache is written only where features are extracted
        check_writable_dir(cache_root, "rank.cache_dir" if settings.cache_dir else "data.cache_dir")
    # One process, or one of several under `accelerate launch`; without a GPU the processes form a
    # gloo group on the CPU only when asked to (as hf-finetune's training sets use_cpu).
    state = PartialState(cpu=not torch.cuda.is_available())
    if settings.by == "finetune":
        from hf_finetune.rank.finetune import check_finetune, claim_folder

        check_finetune(recipe, state.num_processes)  # its refusals first: an earlier rank's folder stays as it was
        claim_folder(recipe, out_dir)
    if frozen:
        rows, labels = frozen_rows(recipe, specs, cache_root, state)
    else:  # rank.by finetune of every candidate: frozen scores would decide nothing (rank.frozen_scores adds them)
        rows, labels = unscored_rows(recipe, specs)
    by = settings.by
    finetuned = None
    if by == "finetune":
        from hf_finetune.metrics.baseline import chance_figure, majority_figure
        from hf_finetune.rank.finetune import finetune_rows
        from hf_finetune.search.tune import resolve_objective

        # The trivial model's validation figure, and what guessing reaches by luck (every candidate has the same
        # rows and labels): halving waits until candidates beat both, and a run that never does is marked as not
        # learned.
        metric, _ = resolve_objective(recipe, recipe.training.get("metric_for_best_model"))
        counts = (labels["train"], labels["validation"], rows[0]["num_classes"], metric)
        finetuned = finetune_rows(recipe, rows, out_dir, state.num_processes, majority_figure(*counts),
                                  chance_figure(*counts, seed=int(recipe.training.get("seed", 42))))
        # the leader after fine-tuning, and those it is not surely ahead of (rank/confidence.finetuned_ties)
        winner, tied = 0, finetuned.pop("tied")
    else:
        rows.sort(key=lambda r: r["scores"][by], reverse=True)
        winner, tied = frozen_winner(rows, by)
    for r in rows:
        r.pop("spreads")
    # rank.by finetune: the winner's run may have started from another candidate's finding about the data
    command = train_command(recipe, rows[winner]["spec"], (rows[winner].get("finetune") or {}).get("shared"))
    ties = [{"name": rows[i]["name"], "leader_ahead_share": share,
             "train_command": train_command(recipe, rows[i]["spec"], (rows[i].get("finetune") or {}).get("shared"))}
            for i, share in tied]
    record = build_record(recipe, rows, by, command, time.perf_counter() - started, ties, winner)
    if finetuned is not None:
        record["finetune"] = finetuned
    if state.is_main_process:
        write_report(out_dir, record)
    state.wait_for_everyone()
    return RankResult(rows=rows, winner=rows[winner]["name"], command=command, output_dir=out_dir, record=record,
                      tied=ties)


def frozen_rows(recipe: Recipe, specs: list[ModelSpec], cache_root: Path, state: Any
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per candidate with its frozen-feature scores and their bootstrap spreads, and the labels of
    train and validation (the same for every candidate)."""
    from hf_finetune.rank.confidence import draws, rescored_on_train, rescored_on_validation
    from hf_finetune.rank.features import extract_candidate
    from hf_finetune.rank.scores import hscore, knn_accuracy, logme, probe_accuracy

    settings, rows, resamples = recipe.rank, [], None
    for spec in specs:
        # The main process extracts and writes the cache; the others wait, then read it.
        cand = extract_candidate(recipe, spec, cache_root, settings.batch_size, state.device,
                                 state.main_process_first)
        train, val = cand.features["train"], cand.features["validation"]
        y_train, y_val = cand.labels["train"], cand.labels["validation"]
        scoring = time.perf_counter()
        knn = knn_accuracy(train, y_train, val, y_val, k=settings.knn_k)
        probe = probe_accuracy(train, y_train, val, y_val, seed=int(recipe.training.get("seed", 42)))
        scores = {"logme": logme(train, y_train).score, "knn": knn.accuracy, "knn_f1": knn.f1,
                  "probe": probe.accuracy, "probe_f1": probe.f1}
        if settings.hscore:
            scores["hscore"] = hscore(train, y_train)
        # Every candidate is rescored on the same seeded resamples (the rows are the same for all).
        resamples = resamples or draws(len(y_train), len(y_val), int(recipe.training.get("seed", 42)))
        spreads = {"logme": rescored_on_train(lambda f, y: logme(f, y).score, train, y_train, resamples)}
        for key, fit in (("knn", knn), ("probe", probe)):
            correct = fit.truth == fit.predicted
            spreads[key] = rescored_on_validation(correct, fit.truth, fit.predicted, resamples)
            spreads[f"{key}_f1"] = rescored_on_validation(correct, fit.truth, fit.predicted, resamples, f1=True)
        if settings.hscore:
            spreads["hscore"] = rescored_on_train(hscore, train, y_train, resamples)
        rows.append({**_row(spec, cand.labels, len(cand.label_names)),
                     "scores": scores, "spread": {k: v.std for k, v in spreads.items()}, "spreads": spreads,
                     "dim": cand.dim, "num_params": cand.num_params, "pooling": cand.pooling,
                     "preprocessing": cand.preprocessing, "extraction_s": cand.extraction_s,
                     "from_cache": cand.cached, "scoring_s": time.perf_counter() - scoring})
    return rows, cand.labels


def unscored_rows(recipe: Recipe, specs: list[ModelSpec]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per candidate without frozen-feature scores (rank.by finetune of every candidate: extracting
    them cost a third of the mode's time at 1,000 digits and would decide nothing), and the labels."""
    from hf_finetune.rank.features import split_labels

    labels, names = split_labels(recipe, specs[0])
    logger.info("rank: every candidate is fine-tuned, so none is scored on frozen features (rank.frozen_scores: "
                "true adds those scores to the table)")
    return [{**_row(spec, labels, len(names)), "scores": {}, "spread": {}, "spreads": {}} for spec in specs], labels


def _row(spec: ModelSpec, labels: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """What every candidate's row says, scored on frozen features or not."""
    from hf_finetune.rank.features import display_name

    return {"name": display_name(spec), "model": spec.model_dump(mode="json", exclude_defaults=True),
            "untrained": not spec.pretrained, "rows": {role: len(labels[role]) for role in labels},
            "num_classes": num_classes, "spec": spec}


def frozen_winner(rows: list[dict[str, Any]], by: str) -> tuple[int, list[tuple[int, float]]]:
    """The winner of a frozen-feature ranking (its row index) and the rows tied with it.

    Frozen scores cannot judge a network with random weights: they measure how separable its features
    are, and random convolutional features of simple images can be more separable than pretrained ones
    while that network fine-tunes far worse (1,000 digits: a random-init EfficientNet-Lite0 first by LogME,
    probe and H-score; benchmarks/README.md). So the winner is the best pretrained candidate, ties are called
    among the pretrained ones, and the table keeps the scores' order (`rows` sorted by `by`). With no
    pretrained candidate, the first row.
    """
    from hf_finetune.rank.confidence import tied_with_leader

    judged = [i for i, r in enumerate(rows) if not r["untrained"]] or list(range(len(rows)))
    tied = tied_with_leader([rows[i]["spreads"][by] for i in judged])
    return judged[0], [(judged[i], share) for i, share in tied]
