"""Finished runs as members of an ensemble or a soup: loading, compatibility checks, scores on their splits.

Every member is scored on the same rows: the validation and test splits of the first member's data
as it trained on them (finished/splits.py: a carved validation rebuilt and checked, caps replayed),
or of the data `--data` names; each member with its own preprocessing (its tokenizer and max_length,
or its image size, mean and std). Members that carved their validation differently are refused
unless `--data` names rows to score on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_finetune.errors import IncompatibleMembersError as IncompatibleMembersError
from hf_finetune.errors import NotAFinishedRunError, UserError
from hf_finetune.models.attention import ATTENTION_DROPOUT_KEYS
from hf_finetune.models.hidden_dropout import COMPANION_KEYS, HIDDEN_DROPOUT_KEYS
from hf_finetune.outputs import FinishedRun, read_finished_run
from hf_finetune.predictor import read_model_config
from hf_finetune.tasks import require

logger = logging.getLogger(__name__)

ROLES = ("validation", "test")
# config.json keys that do not describe the architecture: labels, versions, precision, attention kernel and
# dropouts (training settings: members trained with and without dropout average alike).
NOT_ARCHITECTURE = {"id2label", "label2id", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
                    "_attn_implementation_autoset", "attn_implementation", "problem_type", "label_names",
                    "num_labels", "num_classes", *ATTENTION_DROPOUT_KEYS, *HIDDEN_DROPOUT_KEYS, *COMPANION_KEYS}





@dataclass
class Member:
    """A finished run taking part in an ensemble or a soup."""

    name: str  # for tables and folder names: the run folder's name, made unique
    run: FinishedRun

    @property
    def folder(self) -> Path:
        return self.run.folder

    @property
    def task(self) -> str:
        return self.run.task

    @property
    def backbone(self) -> str:
        return str(self.run.manifest.get("base_model") or (self.run.recipe.get("model") or {}).get("name"))

    def config(self) -> dict[str, Any]:
        return read_model_config(self.folder / "config.json", "RUN_DIR")

    def labels(self) -> list[str]:
        """The model's class names in id order (config.json `id2label`; timm's `label_names`)."""
        config = self.config()
        id2label = config.get("id2label") or {}
        if id2label:
            return [str(id2label.get(str(i), id2label.get(i))) for i in range(len(id2label))]
        return [str(name) for name in config.get("label_names") or self.run.manifest.get("labels") or []]


def load_members(folders: list[str | Path], *, allow_ensembles: bool = False, capability: str = "ensemble"
                 ) -> list[Member]:
    """The finished runs in `folders`, in order, with unique names, each of a task that serves `capability`.

    Raises:
        NotAFinishedRunError: a folder that holds no finished run.
        UserError: the same folder twice, or an ensemble folder where a model is needed.
    """
    members: list[Member] = []
    seen: dict[Path, str] = {}
    for folder in folders:
        run = read_finished_run(folder, ": it cannot be a member")
        require(run.task, capability, f"RUN_DIR: {folder}")
        key = Path(folder).resolve()
        if key in seen:
            raise UserError(f"RUN_DIR: {folder} is given twice (as {seen[key]} too); each member once")
        seen[key] = str(folder)
        if run.is_ensemble and not allow_ensembles:
            raise UserError(f"RUN_DIR: {folder} is an ensemble folder; give its member runs instead "
                            f"({', '.join(str(p) for p in run.member_folders())})")
        name = Path(folder).resolve().name or "run"
        used = {m.name for m in members}
        unique, n = name, 2
        while unique in used:
            unique, n = f"{name}-{n}", n + 1
        members.append(Member(unique, run))
    if len(members) < 2:
        only = f" ({members[0].folder})" if members else ""
        raise UserError(f"RUN_DIR: give at least two finished runs; an ensemble or soup of one run{only} is a copy "
                        f"of it: use the run itself (hf-finetune predict {members[0].folder if members else 'RUN_DIR'} "
                        "INPUTS...)")
    return members


def check_same_labels(members: list[Member]) -> list[str]:
    """The members' common task and label names (in order).

    Raises:
        IncompatibleMembersError: naming the member whose task, label names or label order differ.
    """
    first = members[0]
    labels = first.labels()
    for other in members[1:]:
        if other.task != first.task:
            raise IncompatibleMembersError(
                f"RUN_DIR: {other.folder} is a {other.task} run but {first.folder} is a {first.task} run; "
                "members must solve the same task")
        theirs = other.labels()
        if theirs != labels:
            if sorted(theirs) == sorted(labels):
                what = (f"the same label names in a different order ({', '.join(theirs)} vs {', '.join(labels)}); "
                        "class ids would be averaged across different classes")
            else:
                missing = sorted(set(labels) - set(theirs))
                extra = sorted(set(theirs) - set(labels))
                what = "different label names (" + "; ".join(
                    part for part in (f"lacks {', '.join(missing)}" if missing else "",
                                      f"adds {', '.join(extra)}" if extra else "") if part) + ")"
            raise IncompatibleMembersError(
                f"RUN_DIR: {other.folder} has {what} compared with {first.folder}; members must predict the "
                "same labels in the same order")
    return labels


def check_soupable(members: list[Member]) -> None:
    """Weight averaging needs runs fine-tuned from one backbone with one architecture.

    Raises:
        IncompatibleMembersError: naming the backbones, or the config.json key whose value differs.
    """
    check_same_labels(members)
    first = members[0]
    base = first.config()
    for other in members[1:]:
        if other.backbone != first.backbone and not _same_path(other.backbone, first.backbone):
            raise IncompatibleMembersError(
                f"RUN_DIR: {other.folder} was fine-tuned from '{other.backbone}' but {first.folder} from "
                f"'{first.backbone}'; a soup averages runs of one backbone (use --method logits to combine "
                "different backbones)")
        theirs = other.config()
        for key in sorted((set(base) | set(theirs)) - NOT_ARCHITECTURE):
            if base.get(key) != theirs.get(key):
                raise IncompatibleMembersError(
                    f"RUN_DIR: {other.folder} has a different architecture from {first.folder}: config.json "
                    f"'{key}' is {_short(theirs.get(key))} vs {_short(base.get(key))}; a soup averages runs of "
                    "one architecture (use --method logits instead)")


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- scoring members on the shared splits -----------------------------------------------------------

def split_datasets(predictor: Any, data_source: FinishedRun, model_folder: Path,
                   data: str | None = None) -> tuple[dict[str, Any], Any]:
    """The validation and test splits of `data_source`'s data, preprocessed as `predictor`'s model needs.

    Without `data`, the splits as `data_source` trained on them (finished/splits.py: a carved validation
    rebuilt and checked against its run.json; caps replayed); with `data` (a file, a folder, a saved
    dataset or a Hub id, as `evaluate --data` takes), that data's `validation` and `test` splits, a
    single split of another name counting as validation.

    Returns:
        ({role: dataset}, collator).

    Raises:
        IncompatibleMembersError: the data's label space is not the model's.
    """
    if data is not None:
        return _named_data_splits(predictor, data_source, data)
    from hf_finetune.finished.splits import rebuild_splits, run_recipe

    raw = run_recipe(data_source)
    raw["model"] = {**(raw.get("model") or {}), "name": str(model_folder)}
    prepared = rebuild_splits(data_source, raw, predictor, ROLES)
    if list(prepared.labels.names) != list(predictor.labels):
        raise IncompatibleMembersError(
            f"RUN_DIR: the data of {data_source.folder} has labels {', '.join(prepared.labels.names)} but the "
            f"model in {model_folder} predicts {', '.join(predictor.labels)}")
    return {role: prepared.splits[role] for role in ROLES if role in prepared.splits}, prepared.collator


def data_roles(data: str, available: list[str]) -> dict[str, str]:
    """role -> split of `--data`: its `validation` and `test` splits; a single split of another name is validation.

    Raises:
        UserError: no split to score.
    """
    roles = {role: role for role in ROLES if role in available}
    if not roles and len(available) == 1:
        roles = {"validation": available[0]}
    if not roles:
        raise UserError(f"--data: {data} has splits {', '.join(available)}; the members are scored on splits "
                        "named validation (ranks, weighs, chooses ingredients) and test (reported)")
    return roles


def _named_data_splits(predictor: Any, data_source: FinishedRun, data: str) -> tuple[dict[str, Any], Any]:
    from hf_finetune.data.sources import load_raw_splits
    from hf_finetune.finished.evaluate import evaluation_recipe, predictor_eval_dataset

    recipe, split, _ = evaluation_recipe(data_source.folder, data, None)
    available = [split] if split is not None else list(load_raw_splits(recipe.data))
    out, collator = {}, None
    for role, name in data_roles(data, available).items():
        prepared, _ = predictor_eval_dataset(recipe, name, predictor)
        out[role], collator = prepared.splits["eval"], prepared.collator
    return out, collator


def report(probs: np.ndarray, labels: np.ndarray, metrics: list[str], label_names: list[str]) -> dict[str, Any]:
    """The metrics.json split report of class probabilities: metrics, per class, confusion matrix, loss."""
    from hf_finetune.metrics import ClassificationMetrics

    out = ClassificationMetrics(metrics, list(label_names)).report(probs.argmax(axis=-1).tolist(), labels.tolist())
    # The cross-entropy of the (averaged) probabilities, as evaluation reports for one model.
    out["loss"] = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
    return out


def selection_metric(run: FinishedRun, asked: str | None) -> str:
    """The validation metric that ranks members: `asked`, else the run's own selection metric."""
    if asked:
        return asked.removeprefix("eval_")
    chosen = (run.recipe.get("training") or {}).get("metric_for_best_model") or "accuracy"
    return str(chosen).removeprefix("eval_")


def metric_value(split_report: dict[str, Any], metric: str, where: str) -> float:
    if metric not in split_report or not isinstance(split_report[metric], (int, float)):
        known = sorted(k for k, v in split_report.items() if isinstance(v, (int, float)) and k != "num_samples")
        from hf_finetune.errors import did_you_mean

        raise UserError(f"--metric: '{metric}' is not among the {where} metrics ({', '.join(known)})"
                        + did_you_mean(metric, known))
    return float(split_report[metric])


# --- writing the result ---------------------------------------------------------------------------

def write_output(out_dir: str | Path, overwrite: bool, what: str, fill: Any, manifest: dict[str, Any]) -> Path:
    """Writes a combination's folder the way a run publishes: staged, then moved in, run.json last.

    Args:
        out_dir: the result folder: new, empty, or (with `overwrite`) holding an earlier result.
        what: the command, for the lock file.
        fill: called with the staging folder; writes every file of the result there.
        manifest: run.json's content, less the file list and status that publishing adds.

    Raises:
        OutputExistsError: the folder holds a finished run (without `overwrite`) or foreign files.
    """
    from hf_finetune.outputs import guard_output_dir, output_lock, prepare_output_dir, publish, staging_dir

    out_dir = Path(out_dir)
    guard_output_dir(out_dir, overwrite, resume=False)
    prepare_output_dir(out_dir, overwrite)
    with output_lock(out_dir, what):
        guard_output_dir(out_dir, overwrite, resume=False)
        staging = staging_dir(out_dir)
        fill(staging)
        publish(staging, out_dir, manifest)
    return out_dir


def copy_run(run: FinishedRun, dest: Path) -> None:
    """Copies a finished run's listed files and run.json into `dest` (hard links where possible)."""
    import os
    import shutil

    from hf_finetune.outputs import RUN_FILE

    for name in [*run.manifest.get("files", []), RUN_FILE]:
        src = run.folder / name
        if not src.is_file():
            raise NotAFinishedRunError(f"RUN_DIR: {run.folder} lists {name} in its run.json, but the file is "
                                       "missing; the folder is damaged")
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:  # publishing replaces files by renaming, so a link keeps this copy's content if the run is redone
            os.link(src, target)
        except OSError:
            shutil.copy2(src, target)


def base_manifest(kind: str, members: list[Member], labels: list[str], started: float, data: str | None = None,
                  recipe_from: Member | None = None) -> dict[str, Any]:
    """run.json of a combination: what it is, of which runs, when, and what it was scored on.

    `recipe_from`: the member whose recipe.yaml the combination keeps (default: the first); its run.json
    `splits` come along, so that `evaluate` rebuilds a carved validation as that run had it.
    """
    import datetime as dt
    import time

    from hf_finetune.version import __version__

    first = members[0].run.manifest
    splits = (recipe_from or members[0]).run.manifest.get("splits")
    return {
        "hf_finetune_version": __version__,
        "kind": kind,
        "task": members[0].task,
        "base_model": members[0].backbone,
        "hub_ids": first.get("hub_ids", {}),
        "labels": labels,
        "members": [{"name": m.name, "source": str(m.folder.resolve()), "backbone": m.backbone} for m in members],
        **({"splits": splits} if splits else {}),
        **({"scored_on": data} if data is not None else {}),
        "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - started, 1),
    }
