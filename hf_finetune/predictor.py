"""A finished run's model ready to label inputs: one fine-tuned model with its task's preprocessing, or an
ensemble folder's members averaged.

    load_predictor     the model (eval mode, local files only), its tokenizer or eval image transform, its labels
    Predictor          probabilities of a batch of inputs (`Item`s), preprocessed as evaluation did
    probabilities      softmax probabilities of a whole prepared dataset, in its order

Every command that uses a finished model (predict, evaluate, export, ensembles and soups, a distillation
teacher) loads it here, so this sits below training: a teacher is loaded without the commands.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError

from hf_finetune.errors import IncompatibleMembersError, NotAFinishedRunError
from hf_finetune.outputs import read_finished_run, read_run
from hf_finetune.outputs.finished import check_weights_intact
from hf_finetune.tasks import get_task, task_for_model

logger = logging.getLogger(__name__)


@dataclass
class Predictor:
    """A fine-tuned model ready to label inputs, with what it needs to preprocess them."""

    task: str
    model: Any
    labels: list[str]
    recipe: dict[str, Any]
    tokenizer: Any = None
    max_length: int | None = None
    transform: Any = None

    @property
    def inputs(self) -> Any:
        """What the model reads (the task layer's Inputs: texts or images)."""
        return get_task(self.task).inputs

    @property
    def text_pair_column(self) -> str | None:
        return ((self.recipe.get("data") or {}).get("columns") or {}).get("text_pair")

    def default_column(self) -> str:
        columns = (self.recipe.get("data") or {}).get("columns") or {}
        key = self.inputs.input_keys[0]
        return columns.get(key) or key

    def probabilities(self, batch: list[Item]) -> Any:
        """The task's scores of a batch of inputs: softmax class probabilities, or a sigmoid per label for
        label sets (an ensemble averages its members')."""
        return get_task(self.task).problem.activation(model_logits(self, batch))


@dataclass
class Item:
    """One input: what it is (text, or an image path) and, for sentence pairs, its second text."""

    value: Any
    pair: str | None = None


def read_model_config(path: Path, key: str) -> dict[str, Any]:
    """A model folder's config.json as a mapping.

    Raises:
        NotAFinishedRunError: it cannot be read or is not a JSON object (the message starts with `key`,
            the command-line argument that named the folder).
    """
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise NotAFinishedRunError(f"{key}: {path} is not a readable model config: {exc}") from None
    if not isinstance(fields, dict):
        raise NotAFinishedRunError(f"{key}: {path} is not a model config (a JSON object)")
    return fields


def output_task(out_dir: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """The task of a finished run's folder and its resolved recipe (from run.json, or without one,
    from config.json, with an empty recipe).

    Raises:
        NotAFinishedRunError: the folder holds neither, or its config.json cannot be read.
    """
    out_dir = Path(out_dir)
    if read_run(out_dir) is not None:
        finished = read_finished_run(out_dir)
        return finished.task, finished.recipe
    config = out_dir / "config.json"
    if not config.is_file():
        raise NotAFinishedRunError(
            f"OUTPUT_DIR: {out_dir} holds no finished run (no run.json) and no model (no config.json)"
        )
    fields = read_model_config(config, "OUTPUT_DIR")
    check_weights_intact(out_dir)  # what read_finished_run checks, less the checksums a run.json would hold
    logger.warning("%s has no run.json (not a finished run): using the model in it anyway", out_dir)
    return task_for_model(fields).name, {}


def load_predictor(out_dir: str | os.PathLike) -> Predictor:
    """Loads the fine-tuned model in `out_dir` for inference (eval mode, local files only); for an
    ensemble folder, every member (load_ensemble)."""
    out_dir = Path(out_dir)
    if read_run(out_dir) is not None and read_finished_run(out_dir).is_ensemble:
        return load_ensemble(out_dir)
    task, recipe = output_task(out_dir)
    allow_pickle = bool((recipe.get("model") or {}).get("allow_pickle"))
    check_weights(out_dir, allow_pickle)
    # The same rule as training: pickle can run code when loaded, so safetensors only unless allowed.
    kwargs = {"local_files_only": True, "use_safetensors": None if allow_pickle else True}
    spec = get_task(task)
    try:
        import transformers

        model = getattr(transformers, spec.auto_model).from_pretrained(out_dir, **kwargs).eval()
        preprocessor = spec.inputs.preprocessor(out_dir, model.config, recipe, **kwargs)
        return Predictor(task, model, _labels(model), recipe, **preprocessor)
    except (OSError, ValueError, SafetensorError) as exc:  # missing files; a damaged config.json or weights file
        raise NotAFinishedRunError(f"OUTPUT_DIR: cannot load the model in {out_dir}: {exc}; the folder is damaged: "
                                   "restore it from a copy, or train its recipe again") from None


def check_weights(out_dir: Path, allow_pickle: bool) -> None:
    """Refuses a folder whose only weights are pickle-based, unless the run's recipe allowed pickle.

    Raises:
        NotAFinishedRunError: naming the pickle file and the recipe key that allows it.
    """
    safe = any(out_dir.glob("*.safetensors")) or (out_dir / "model.safetensors.index.json").is_file()
    pickled = sorted(p.name for p in out_dir.glob("*.bin") if p.name != "training_args.bin")
    if not safe and pickled and not allow_pickle:
        raise NotAFinishedRunError(
            f"OUTPUT_DIR: {out_dir} holds only pickle-based weights ({', '.join(pickled)}); pickle can run code "
            "when loaded, so it is refused unless the run's recipe.yaml sets model.allow_pickle: true. Convert "
            "the weights to safetensors (model.save_pretrained(dir, safe_serialization=True)) to use them.")


def _labels(model: Any) -> list[str]:
    id2label = model.config.id2label
    return [str(id2label[i]) for i in range(len(id2label))]


def model_logits(predictor: Predictor, batch: list[Item]) -> Any:
    return predictor.model(**predictor.inputs.encode(predictor, batch)).logits


@dataclass
class EnsemblePredictor(Predictor):
    """A predictor whose probabilities are the weighted mean of its members' (each preprocessing itself)."""

    members: list[Predictor] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def probabilities(self, batch: list[Item]) -> Any:
        import torch

        batch = self.inputs.decode(batch)  # images decoded once, transformed by each member
        parts = [torch.softmax(model_logits(m, batch).float(), dim=-1) for m in self.members]
        return sum(w * p for w, p in zip(self.weights, parts, strict=True))


def load_ensemble(out_dir: str | os.PathLike) -> EnsemblePredictor:
    """The ensemble in `out_dir`, its members loaded (eval mode, local files only)."""
    run = read_finished_run(out_dir)
    spec = run.ensemble
    members = [load_predictor(folder) for folder in run.member_folders()]
    for folder, member in zip(run.member_folders(), members, strict=True):
        if member.labels != members[0].labels:
            raise IncompatibleMembersError(f"OUTPUT_DIR: member {folder} predicts other labels than the first "
                                           "member; the ensemble folder is damaged")
    weights = [float(m.get("weight", 1.0 / len(members))) for m in spec["members"]]
    first = members[0]
    return EnsemblePredictor(task=run.task, model=None, labels=first.labels, recipe=run.recipe,
                             tokenizer=first.tokenizer, max_length=first.max_length, transform=first.transform,
                             members=members, weights=weights)


def combine_probabilities(probs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The weighted mean of the members' probability rows (weights sum to one)."""
    out = np.zeros_like(probs[0])
    for p, w in zip(probs, weights, strict=True):
        out += w * p
    return out


def probabilities(model: Any, dataset: Any, collator: Any, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (rows x classes, float64) and label ids of a dataset, in its order."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
    probs, labels = [], []
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            labels.append(batch.pop("labels").numpy())
            probs.append(torch.softmax(model(**batch).logits.double(), dim=-1).numpy())
    return np.concatenate(probs), np.concatenate(labels)
