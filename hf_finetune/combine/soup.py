"""Model soups (Wortsman et al., 2022, "Model soups: averaging weights of multiple fine-tuned models
improves accuracy without increasing inference time"): one model whose weights are the mean of
several runs fine-tuned from the same backbone with the same architecture.

    uniform soup   the mean of every member's weights
    greedy soup    members sorted by validation score, best first; each is added only if the soup of
                   the ingredients so far plus it scores strictly higher on validation (the paper's rule)

Floating-point tensors are averaged (in float64, then cast back); integer buffers such as BatchNorm's
`num_batches_tracked` are not averaged: the best member's are kept. The result is an ordinary
finished-run folder (config.json, model.safetensors, the tokenizer), which `pipeline()` loads.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hf_finetune.combine.ensemble import Combination, score_members
from hf_finetune.combine.members import (
    base_manifest,
    check_soupable,
    load_members,
    metric_value,
    report,
    selection_metric,
    split_datasets,
    write_output,
)
from hf_finetune.errors import IncompatibleMembersError, UserError
from hf_finetune.files import write_json, write_text, write_yaml
from hf_finetune.predictor import load_predictor, probabilities

logger = logging.getLogger(__name__)

METHODS = ("soup", "greedy-soup")


def average_state_dicts(states: list[dict[str, Any]], names: list[str] | None = None) -> dict[str, Any]:
    """The element-wise mean of floating-point tensors; integer tensors are the first state's.

    Raises:
        IncompatibleMembersError: a tensor missing from one state, or of another shape.
    """
    import torch

    names = names or [f"member {i}" for i in range(len(states))]
    first = states[0]
    for name, state in zip(names[1:], states[1:], strict=True):
        if set(state) != set(first):
            key = sorted(set(state) ^ set(first))[0]
            raise IncompatibleMembersError(f"RUN_DIR: the weights of {name} and {names[0]} differ in tensor '{key}'")
        for key, tensor in state.items():
            if tensor.shape != first[key].shape:
                raise IncompatibleMembersError(
                    f"RUN_DIR: tensor '{key}' has shape {tuple(tensor.shape)} in {name} but "
                    f"{tuple(first[key].shape)} in {names[0]}")
    out = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            total = torch.zeros(tensor.shape, dtype=torch.float64)
            for state in states:
                total += state[key].detach().to(torch.float64)
            out[key] = (total / len(states)).to(tensor.dtype)
        else:  # num_batches_tracked and other counters: an average of counts means nothing
            out[key] = tensor.detach().clone()
    return out


def greedy_ingredients(ranked: list[int], own_scores: list[float],
                       soup_score: Callable[[list[int]], float]) -> tuple[list[int], list[dict[str, Any]]]:
    """The greedy soup's recipe: candidates best first, each kept only if validation improves.

    Args:
        ranked: member indices, best validation score first.
        own_scores: each member's own validation score (by index).
        soup_score: the validation score of the soup of the given member indices.

    Returns:
        (the ingredients kept, a log of every decision: candidate, score with it, kept).
    """
    kept = [ranked[0]]
    best = own_scores[ranked[0]]
    log = [{"member": ranked[0], "score": best, "kept": True}]
    for candidate in ranked[1:]:
        score = soup_score([*kept, candidate])
        added = score > best
        log.append({"member": candidate, "score": score, "kept": added})
        if added:
            kept.append(candidate)
            best = score
    return kept, log


def build_soup(out_dir: str | os.PathLike, run_dirs: list[str | os.PathLike], *, method: str = "soup",
               metric: str | None = None, overwrite: bool = False, batch_size: int = 32,
               data: str | None = None) -> Combination:
    """Writes the uniform or greedy soup of the finished runs in `run_dirs` into `out_dir`.

    `data`: labelled data to score on instead of the first member's splits, as for `build_ensemble`.

    Raises:
        IncompatibleMembersError: members with other labels, backbones or architectures, named.
        DifferentCarveError: without `data`, members that carved their validation differently.
        UserError: a folder that is not a finished run; greedy without a validation split.
    """
    if method not in METHODS:
        raise UserError(f"--method: '{method}' is not one of {', '.join(METHODS)}")
    started = time.time()
    members = load_members(list(run_dirs), capability="soup")
    check_soupable(members)
    labels = members[0].labels()
    metric = selection_metric(members[0].run, metric)
    scored = score_members(members, labels, batch_size, data)
    has_validation = "validation" in scored[0].reports
    if method == "greedy-soup" and not has_validation:
        raise UserError("--method greedy-soup: the members' data has no validation split to choose ingredients by")
    own = [metric_value(s.reports["validation"], metric, "validation") if has_validation else 0.0 for s in scored]
    ranked = sorted(range(len(members)), key=lambda i: -own[i])  # stable: ties keep the given order
    names = [m.name for m in members]

    base = load_predictor(members[ranked[0]].folder)  # the best member: its config, tokenizer, preprocessing
    splits, collator = split_datasets(base, members[0].run, members[ranked[0]].folder, data)
    states = [load_predictor(m.folder).model.state_dict() for m in members]
    metrics = members[0].run.recipe.get("metrics") or ["accuracy", "f1"]

    def load(ingredients: list[int]) -> None:
        base.model.load_state_dict(average_state_dicts([states[i] for i in ingredients], [names[i] for i in ingredients]))

    def validation_score(ingredients: list[int]) -> float:
        load(ingredients)
        probs, refs = probabilities(base.model, splits["validation"], collator, batch_size)
        score = metric_value(report(probs, refs, metrics, labels), metric, "validation")
        logger.info("soup of %s: validation %s %.4f", ", ".join(names[i] for i in ingredients), metric, score)
        return score

    if method == "greedy-soup":
        kept, decisions = greedy_ingredients(ranked, own, validation_score)
    else:
        kept, decisions = ranked, []
    load(kept)
    results: dict[str, Any] = {}
    for role, dataset in splits.items():
        probs, refs = probabilities(base.model, dataset, collator, batch_size)
        results[role] = report(probs, refs, metrics, labels)
        baseline = (members[0].run.metrics.get(role) or {}).get("majority_baseline")
        if baseline is not None:
            results[role]["majority_baseline"] = baseline
    results["members"] = {s.member.name: s.reports for s in scored}
    results["soup"] = {"method": method, "metric": metric, "ingredients": [names[i] for i in kept],
                       "decisions": [{**d, "member": names[d["member"]]} for d in decisions],
                       **({"data": data} if data is not None else {})}
    for role in ("validation", "test"):
        if role in results:
            best = max(scored, key=lambda s: s.reports[role].get(metric, float("-inf")))
            logger.info("%s %s: %s %.4f, best member (%s) %.4f", role, metric, method, results[role].get(metric),
                        best.member.name, best.reports[role].get(metric))

    entries = [{"name": m.name, "source": str(m.folder.resolve()), "backbone": m.backbone,
                "weight": (1.0 / len(kept)) if i in kept else 0.0, "used": i in kept}
               for i, m in enumerate(members)]
    recipe = dict(members[ranked[0]].run.recipe)
    recipe["output"] = {**(recipe.get("output") or {}), "dir": str(out_dir)}

    def fill(staging: Path) -> None:
        from hf_finetune.combine.card import render_card

        base.model.save_pretrained(staging)
        if base.tokenizer is not None:
            base.tokenizer.save_pretrained(staging)
        write_yaml(staging / "recipe.yaml", recipe)
        write_json(staging / "metrics.json", results)
        rule = ("members sorted by validation " + metric + ", best first; each added only if the soup's "
                "validation " + metric + " improved") if method == "greedy-soup" else "every member, equal weights"
        description = (f"The weights of {len(kept)} of {len(members)} runs fine-tuned from `{members[0].backbone}`, "
                       f"averaged into one model ({method}: {rule}; Wortsman et al., 2022), made with hf-finetune. "
                       "It costs what one member costs at inference.")
        usage = ("An ordinary model folder:\n\n    from transformers import pipeline\n"
                 f"    pipeline(\"{members[0].task}\", model=\"{out_dir}\")\n\n"
                 f"    hf-finetune predict {out_dir} INPUTS...")
        write_text(staging / "README.md", render_card(method, members[0].task, labels, description, entries,
                                                      results, usage))

    manifest = {**base_manifest("soup", members, labels, started, data, members[ranked[0]]), "method": method,
                "ingredients": [names[i] for i in kept],
                "preprocessing": members[ranked[0]].run.manifest.get("preprocessing", {})}
    write_output(out_dir, overwrite, method, fill, manifest)
    return Combination(Path(out_dir), results)
