"""Logit ensembles: the (weighted) mean of several finished runs' class probabilities.

    build_ensemble    score every member on the shared validation/test rows, write the ensemble folder

The folder is used as a predictor (`hf-finetune predict`, `evaluate`, a distillation teacher) through
hf_finetune/predictor.py's `load_ensemble`, and scored by finished/evaluate.py's `score_ensemble`.

An ensemble folder has no model of its own; its members are copied into it (hard links where the
filesystem allows), so it stays usable when the original run folders change or go:

    ensemble.json   method, weights, the selection metric, members (folder inside this one, source, weight)
    members/NN-name/  each member's finished-run folder
    recipe.yaml     the first member's resolved recipe: the data, columns and metrics `evaluate` uses
    metrics.json    the ensemble's validation and test reports, and each member's under `members`
    README.md       the card: members, weights, every score
    run.json        kind: ensemble
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_finetune.combine.members import (
    ROLES,
    Member,
    base_manifest,
    check_same_labels,
    copy_run,
    load_members,
    metric_value,
    report,
    selection_metric,
    split_datasets,
    write_output,
)
from hf_finetune.errors import IncompatibleMembersError, UserError
from hf_finetune.files import write_json, write_text, write_yaml
from hf_finetune.outputs.finished import ENSEMBLE_FILE
from hf_finetune.predictor import EnsemblePredictor as EnsemblePredictor
from hf_finetune.predictor import combine_probabilities, load_predictor, probabilities
from hf_finetune.predictor import load_ensemble as load_ensemble

logger = logging.getLogger(__name__)

WEIGHTINGS = ("uniform", "validation")
MEMBERS_DIR = "members"


@dataclass
class Combination:
    """A written ensemble or soup folder and its scores (metrics.json)."""

    output_dir: Path
    metrics: dict[str, Any]


@dataclass
class MemberScores:
    """One member's class probabilities on the shared splits, and its reports."""

    member: Member
    probs: dict[str, np.ndarray]  # role -> rows x classes
    labels: dict[str, np.ndarray]  # role -> label ids
    reports: dict[str, dict[str, Any]]


def score_members(members: list[Member], labels: list[str], batch_size: int,
                  data: str | None = None) -> list[MemberScores]:
    """Every member on the first member's validation and test rows (or `data`'s), with its own preprocessing.

    Raises:
        DifferentCarveError: without `data`, members that carved their validation differently.
        IncompatibleMembersError: members whose rebuilt splits do not hold the same rows.
    """
    if data is None:
        from hf_finetune.finished.splits import check_same_carve

        check_same_carve([m.run for m in members])
    metrics = members[0].run.recipe.get("metrics") or ["accuracy", "f1"]
    scored: list[MemberScores] = []
    for member in members:
        predictor = load_predictor(member.folder)
        splits, collator = split_datasets(predictor, members[0].run, member.folder, data)
        probs, refs, reports = {}, {}, {}
        for role, dataset in splits.items():
            probs[role], refs[role] = probabilities(predictor.model, dataset, collator, batch_size)
            reports[role] = report(probs[role], refs[role], metrics, labels)
        logger.info("%s: %s", member.name, "; ".join(f"{r} accuracy {v['accuracy']:.4f}" for r, v in reports.items()
                                                     if "accuracy" in v))
        scored.append(MemberScores(member, probs, refs, reports))
    first = scored[0]
    for other in scored[1:]:
        for role in first.labels:
            if role not in other.labels or not np.array_equal(first.labels[role], other.labels[role]):
                raise IncompatibleMembersError(
                    f"RUN_DIR: the {role} rows rebuilt for {other.member.folder} differ from {first.member.folder}'s")
    return scored


def member_weights(scored: list[MemberScores], weighting: str, metric: str) -> list[float]:
    """Uniform weights, or weights proportional to each member's validation `metric`."""
    if weighting not in WEIGHTINGS:
        raise UserError(f"--weights: '{weighting}' is not one of {', '.join(WEIGHTINGS)}")
    if weighting == "uniform":
        return [1.0 / len(scored)] * len(scored)
    if "validation" not in scored[0].reports:
        raise UserError("--weights validation: the members' data has no validation split to weigh them by")
    values = [metric_value(s.reports["validation"], metric, "validation") for s in scored]
    total = sum(values)
    if total <= 0:
        raise UserError(f"--weights validation: every member scores 0 on validation {metric}; use uniform weights")
    return [v / total for v in values]


def build_ensemble(out_dir: str | os.PathLike, run_dirs: list[str | os.PathLike], *, weights: str = "uniform",
                   metric: str | None = None, overwrite: bool = False, batch_size: int = 32,
                   data: str | None = None) -> Combination:
    """Writes a logit ensemble of the finished runs in `run_dirs` into `out_dir`.

    Args:
        out_dir: the ensemble folder (new or empty; with `overwrite`, an earlier result there is replaced).
        run_dirs: finished runs that predict the same labels in the same order.
        weights: `uniform`, or `validation` (proportional to each member's validation `metric`).
        metric: the validation metric for the weights (default: the first member's selection metric).
        overwrite: replace a finished run or ensemble in `out_dir`.
        batch_size: rows per forward pass.
        data: labelled data to score on instead of the first member's splits (its `validation` and `test`
            splits; a single split of another name is validation), as `evaluate --data` takes it.

    Raises:
        IncompatibleMembersError: members with different tasks, label names or label order.
        DifferentCarveError: without `data`, members that carved their validation differently.
        UserError: a folder that is not a finished run, a bad option.
    """
    started = time.time()
    members = load_members(list(run_dirs))
    labels = check_same_labels(members)
    metric = selection_metric(members[0].run, metric)
    scored = score_members(members, labels, batch_size, data)
    w = member_weights(scored, weights, metric)
    metric_names = members[0].run.recipe.get("metrics") or ["accuracy", "f1"]
    results: dict[str, Any] = {}
    for role in scored[0].probs:
        mean = combine_probabilities([s.probs[role] for s in scored], w)
        results[role] = report(mean, scored[0].labels[role], metric_names, labels)
        baseline = (members[0].run.metrics.get(role) or {}).get("majority_baseline")
        if baseline is not None:
            results[role]["majority_baseline"] = baseline
    results["members"] = {s.member.name: s.reports for s in scored}
    results["ensemble"] = {"method": "logits", "weights": weights, "metric": metric,
                           "member_weights": dict(zip([m.name for m in members], w, strict=True)),
                           **({"data": data} if data is not None else {})}
    _log_scores(results, metric)

    entries = [{"name": m.name, "folder": f"{MEMBERS_DIR}/{i:02d}-{m.name}", "source": str(m.folder.resolve()),
                "backbone": m.backbone, "weight": wi} for i, (m, wi) in enumerate(zip(members, w, strict=True))]
    spec = {"method": "logits", "weights": weights, "metric": metric, "task": members[0].task, "labels": labels,
            "members": entries}
    recipe = dict(members[0].run.recipe)
    recipe["output"] = {**(recipe.get("output") or {}), "dir": str(out_dir)}

    def fill(staging: Path) -> None:
        from hf_finetune.combine.card import render_card
        from hf_finetune.report.plots import confusion_plot_name, plot_confusion_matrix

        for member, entry in zip(members, entries, strict=True):
            copy_run(member.run, staging / entry["folder"])
        write_json(staging / ENSEMBLE_FILE, spec)
        write_yaml(staging / "recipe.yaml", recipe)
        write_json(staging / "metrics.json", results)
        for role in ROLES:
            if role in results:
                try:
                    plot_confusion_matrix(results[role], staging / confusion_plot_name(role),
                                          f"Confusion matrix ({role}, ensemble)")
                except Exception:  # the numbers are written; a drawing problem must not hide them
                    logger.warning("Could not draw the %s confusion matrix", role, exc_info=True)
        description = (f"The {'validation-weighted' if weights == 'validation' else 'uniform'} mean of "
                       f"{len(members)} fine-tuned runs' class probabilities (a logit ensemble), made with "
                       "hf-finetune. Each member keeps its own preprocessing.")
        usage = ("Not a single model: `pipeline()` cannot load this folder. Use hf-finetune, which runs every "
                 "member and averages their probabilities:\n\n"
                 f"    hf-finetune predict {out_dir} INPUTS...\n    hf-finetune evaluate {out_dir} --data FILE\n\n"
                 "To distil it into one model, name this folder as `distill.teacher` in a recipe.")
        write_text(staging / "README.md", render_card("ensemble", members[0].task, labels, description, entries,
                                                      results, usage))

    manifest = {**base_manifest("ensemble", members, labels, started, data), "method": "logits", "weights": weights}
    manifest["members"] = [{**m, "folder": e["folder"], "weight": e["weight"]}
                           for m, e in zip(manifest["members"], entries, strict=True)]
    write_output(out_dir, overwrite, "ensemble", fill, manifest)
    return Combination(Path(out_dir), results)


def _log_scores(results: dict[str, Any], metric: str) -> None:
    for role in ROLES:
        if role not in results:
            continue
        best = max(results["members"].items(), key=lambda kv: kv[1][role].get(metric, float("-inf")))
        logger.info("%s %s: ensemble %.4f, best member (%s) %.4f", role, metric, results[role].get(metric, float("nan")),
                    best[0], best[1][role].get(metric, float("nan")))
