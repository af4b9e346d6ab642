"""Frozen features of one candidate backbone on the recipe's data, cached on disk.

Each candidate gets its own preprocessing, as fine-tuning it would: its tokenizer and max length
(text), its own input size, crop, mean and std (vision). Features are what the candidate's
classifier would read:

    vision   the input of the new linear head (timm's pre-logits), captured by the linear probe's
             own extraction (`hf_finetune.models.features.extract_features`)
    text     the pooling the model was trained with: a sentence-transformers folder says it in
             modules.json / 1_Pooling/config.json (mean, CLS or max over tokens, then unit length
             when it lists a Normalize module); other encoders give the input of their
             classification head (BERT: the pooler on [CLS]), and [CLS]'s hidden state when that
             head is more than one linear layer

The cache key covers the backbone (name, revision, pretrained or not, seed, and the size and
modification time of a local folder's files), the data (the prepared splits' `datasets`
fingerprints) and the preprocessing (max length, pooling, image data config). Under several
processes the main process extracts and writes the cache first; the others then read it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_finetune.errors import ModelError, UserError
from hf_finetune.files import write_atomically, write_json
from hf_finetune.recipe import ModelSpec, Recipe
from hf_finetune.tasks import task_of

logger = logging.getLogger(__name__)

ROLES = ("train", "validation")
CACHE_VERSION = 1  # bump when what is cached changes


@dataclass
class CandidateFeatures:
    """Features and labels of the training and validation splits for one candidate."""

    name: str  # as shown: model.name, with "(random init)" when not pretrained
    features: dict[str, np.ndarray]  # role -> (rows, dim) float32
    labels: dict[str, np.ndarray]  # role -> (rows,) int
    label_names: list[str]
    pooling: str
    preprocessing: dict[str, Any]
    extraction_s: float  # seconds the extraction took when it ran (also when read from the cache)
    cached: bool  # read from the cache in this call
    cache_file: str = ""
    num_params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.features["train"].shape[1])


def display_name(spec: ModelSpec) -> str:
    return spec.name if spec.pretrained else f"{spec.name} (random init)"


def candidate_recipe(recipe: Recipe, spec: ModelSpec) -> Recipe:
    """The recipe with `spec` as its backbone (a copy; the user's recipe stays as it was)."""
    out = recipe.model_copy(deep=True)
    out.model = spec.model_copy(deep=True)
    out.set_origin(recipe.source, set(recipe.user_training_keys), list(recipe.overrides))
    return out


def check_fits_task(recipe: Recipe, spec: ModelSpec) -> None:
    """Loads the candidate's config (no weights) and checks it is a backbone for the recipe's task.

    Raises:
        ModelError: naming the candidate and why it does not fit.
    """
    inputs = task_of(recipe).inputs
    where = f"rank.candidates: '{display_name(spec)}'"
    try:
        config = inputs.load_config(spec)
    except UserError as exc:
        raise ModelError(f"{where} does not fit task {recipe.task}: {exc}") from None
    foreign = inputs.foreign_config(config)
    if foreign is not None:
        raise ModelError(f"{where} " + foreign.format(task=f"task {recipe.task}"))


def _weights_identity(name: str) -> list[tuple[str, int, int]]:
    folder = Path(name)
    if not folder.is_dir():
        return []
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if p.is_file())


def cache_key(spec: ModelSpec, seed: int, fingerprints: dict[str, str], preprocessing: dict[str, Any]) -> str:
    parts = {"version": CACHE_VERSION, "model": spec.model_dump(mode="json"), "seed": seed,
             "files": _weights_identity(spec.name), "data": fingerprints, "preprocessing": preprocessing}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _seed(recipe: Recipe) -> int:
    return int(recipe.training.get("seed", 42))


def extract_candidate(recipe: Recipe, spec: ModelSpec, cache_root: Path, batch_size: int,
                      device: torch.device, main_process_first: Any = contextlib.nullcontext) -> CandidateFeatures:
    """The candidate's features of the recipe's train and validation splits, from the cache when present.

    Args:
        recipe: the validated recipe (its data, preprocessing and training.seed are used).
        spec: the candidate backbone.
        cache_root: folder of the feature cache.
        batch_size: rows per forward pass.
        device: where the backbone runs.
        main_process_first: context manager; under several processes the main process extracts and
            writes the cache inside it first, the others then find the cache.
    """
    from transformers import set_seed

    rec = candidate_recipe(recipe, spec)
    with main_process_first():
        data, preprocessing = _prepare_data(rec)
        fingerprints = {role: data.splits[role]._fingerprint for role in ROLES}
        file = cache_root / f"{cache_key(spec, _seed(rec), fingerprints, preprocessing)}.npz"
        if file.is_file():
            return _read_cache(file, display_name(spec))
        set_seed(_seed(rec))  # before a randomly initialised backbone or the new head is built
        model = _build_model(rec, data)
        pooling = _pooling(model, preprocessing)
        started = time.perf_counter()
        features = {role: _extract(model, pooling, data.splits[role], data.collator, batch_size, device)
                    for role in ROLES}
        elapsed = time.perf_counter() - started
        result = CandidateFeatures(
            display_name(spec), features, {role: _labels(data.splits[role]) for role in ROLES},
            list(data.labels.names), pooling, preprocessing, elapsed, cached=False, cache_file=str(file),
            num_params=sum(p.numel() for p in model.parameters()))
        _write_cache(file, result)
        logger.info("%s: extracted %d-dimensional features (%s) of %s rows in %.1fs", result.name, result.dim,
                    pooling, "/".join(str(len(features[r])) for r in ROLES), elapsed)
        return result


def split_labels(recipe: Recipe, spec: ModelSpec) -> tuple[dict[str, np.ndarray], list[str]]:
    """The training and validation labels as `spec`'s run reads them, and the label names: what rank.by
    finetune needs of the data when it scores nothing on frozen features (the same for every candidate)."""
    data, _ = _prepare_data(candidate_recipe(recipe, spec))
    return {role: _labels(data.splits[role]) for role in ROLES}, list(data.labels.names)


def _labels(dataset: Any) -> np.ndarray:
    from hf_finetune.data.labels import LABEL_COLUMN

    return np.asarray(dataset.with_format(None)[LABEL_COLUMN], dtype=np.int64)


def _prepare_data(rec: Recipe) -> tuple[Any, dict[str, Any]]:
    """(prepared data, preprocessing) exactly as fine-tuning the candidate prepares them."""
    from hf_finetune.data import build_datasets

    inputs = task_of(rec).inputs
    prep = inputs.preprocessing(rec, augment=False)  # the evaluation transform for every split
    data = build_datasets(rec, prep.encoding)
    pooling = inputs.feature_pooling(rec.model)
    return data, prep.record | ({"pooling": pooling} if pooling is not None else {})


def _build_model(rec: Recipe, data: Any) -> Any:
    # rank reads the backbone's own states (its sentence-transformers pooling is applied here), so the
    # training-time mean-pooling layer is left out (timm backbones have none: the key means nothing there)
    spec = rec.model.model_copy(update={"pooling": "cls"})
    return task_of(rec).inputs.build_backbone(spec, data.labels, getattr(data.collator, "tokenizer", None))


def _pooling(model: Any, preprocessing: dict[str, Any]) -> str:
    """What the features are: a sentence-transformers pooling, or the input of the model's head."""
    asked = preprocessing.get("pooling", "model's head")
    if asked != "model's head":
        return asked
    if _single_linear_head(model):
        return "head input"
    return "pre-logits" if hasattr(model, "timm_model") else "cls"


def _single_linear_head(model: Any) -> bool:
    from hf_finetune.models.features import find_classifier

    try:
        find_classifier(model)
    except UserError:
        return False
    return True


@torch.no_grad()
def _extract(model: Any, pooling: str, dataset: Any, collator: Any, batch_size: int,
             device: torch.device) -> np.ndarray:
    from hf_finetune.models.features import FEATURES, extract_features, find_classifier

    if pooling == "head input":
        table = extract_features(model, find_classifier(model), dataset, collator, batch_size, device)
        return np.asarray(table.with_format("numpy")[FEATURES], dtype=np.float32)
    from hf_finetune.data.labels import LABEL_COLUMN

    if pooling == "pre-logits":  # a timm head of several layers: timm's own features in front of it
        timm_model = model.timm_model.eval().to(device)
        out = []
        for start in range(0, len(dataset), batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            pixels = batch["pixel_values"].to(device)
            out.append(timm_model.forward_head(timm_model.forward_features(pixels), pre_logits=True).float().cpu())
        return torch.cat(out).numpy().astype(np.float32)
    mode, normalize = pooling.split(" + ")[0], pooling.endswith("normalize")
    encoder = model.base_model.eval().to(device)
    out = []
    for start in range(0, len(dataset), batch_size):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        batch.pop(LABEL_COLUMN, None)
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = encoder(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if mode == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        elif mode == "max":
            pooled = hidden.masked_fill(mask == 0, -1e9).max(1).values
        else:
            pooled = hidden[:, 0]
        if normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        out.append(pooled.cpu())
    return torch.cat(out).numpy().astype(np.float32)


def _write_cache(file: Path, result: CandidateFeatures) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{role}_features": result.features[role] for role in ROLES}
    arrays |= {f"{role}_labels": result.labels[role] for role in ROLES}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a bare name
            np.savez(f, **arrays)

    # The description first: a cache file that exists is complete, with its description beside it.
    write_json(file.with_suffix(".json"), {
        "name": result.name, "label_names": result.label_names, "pooling": result.pooling,
        "preprocessing": result.preprocessing, "extraction_s": result.extraction_s, "num_params": result.num_params,
    })
    write_atomically(file, write)


def _read_cache(file: Path, name: str) -> CandidateFeatures:
    meta = json.loads(file.with_suffix(".json").read_text())
    with np.load(file) as arrays:
        features = {role: arrays[f"{role}_features"] for role in ROLES}
        labels = {role: arrays[f"{role}_labels"] for role in ROLES}
    logger.info("%s: features read from the cache %s", name, file)
    return CandidateFeatures(name, features, labels, meta["label_names"], meta["pooling"], meta["preprocessing"],
                             meta["extraction_s"], cached=True, cache_file=str(file),
                             num_params=meta.get("num_params", 0))


def default_cache_root(recipe: Recipe) -> Path:
    from hf_finetune.data import default_cache_dir

    base = Path(recipe.data.cache_dir) if recipe.data.cache_dir else default_cache_dir()
    return base / "rank-features"




