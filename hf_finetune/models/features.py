"""Linear probe on cached features: one forward pass of the frozen backbone per sample, in total.

The input of the model's classifier is captured once for every sample (evaluation mode, evaluation
preprocessing), then only the classifier trains, on those vectors, for as many epochs as asked.
The classifier's parameters are the model's own, so afterwards the full model carries the trained
head and is saved and used as usual; in evaluation mode it computes exactly the cached features,
so scores on cached features are the model's scores.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_finetune.data.labels import LABEL_COLUMN
from hf_finetune.errors import UserError
from hf_finetune.models.blocks import split_model

logger = logging.getLogger(__name__)

FEATURES = "features"


def find_classifier(model: nn.Module) -> nn.Module:
    """The single linear layer that holds all of the new head's parameters.

    Raises:
        UserError: when the head has several layers or is not linear (features must be the input of
            one layer for the probe on cached features to equal the model).
    """
    head_ids = {id(p) for _, p in split_model(model).head.params}
    for module in model.modules():
        own = {id(p) for p in module.parameters(recurse=False)}
        if own and own == head_ids and isinstance(module, nn.Linear):
            return module
    raise UserError(
        f"finetune.cache_features: the new head of {type(model).__name__} is not a single linear layer, so "
        "features cannot be cached in front of it; set finetune.cache_features: false"
    )


class CachedFeatureHead(nn.Module):
    """The model's own classifier, applied to cached features (shares its parameters)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.classifier(features))


@torch.no_grad()
def extract_features(model: nn.Module, classifier: nn.Module, dataset: Any, collator: Any, batch_size: int,
                     device: torch.device, autocast_dtype: torch.dtype | None = None) -> Dataset:
    """The classifier's input for every row of `dataset`, with the labels, as a torch-formatted Dataset.

    `autocast_dtype`: the mixed precision the run trains and evaluates in (bf16 on AMX CPUs and GPUs),
    so the cached features are the ones the saved model computes under the same setting.
    """
    captured: list[torch.Tensor] = []

    def grab(module: nn.Module, args: tuple) -> None:
        captured.append(args[0].detach().float().cpu())

    handle = classifier.register_forward_pre_hook(grab)
    was_training = model.training
    model.eval().to(device)
    labels: list[int] = []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            labels += batch.pop(LABEL_COLUMN).tolist()
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                model(**{k: v.to(device) for k, v in batch.items()})
    finally:
        handle.remove()
        model.train(was_training)
    features = torch.cat(captured)
    if features.ndim != 2:
        raise UserError(
            f"finetune.cache_features: the classifier of {type(model).__name__} reads whole sequences "
            f"(input shape {tuple(features.shape)}), not one vector per sample; set finetune.cache_features: false"
        )
    table = Dataset.from_dict({FEATURES: features.numpy(), LABEL_COLUMN: labels})
    return table.with_format("torch")


def cache_features(model: nn.Module, splits: dict[str, Any], collator: Any, batch_size: int,
                   device: torch.device, autocast_dtype: torch.dtype | None = None
                   ) -> tuple[CachedFeatureHead, dict[str, Dataset]]:
    """Features of every split, and the head to train on them."""
    classifier = find_classifier(model)
    cached = {}
    for role, dataset in splits.items():
        cached[role] = extract_features(model, classifier, dataset, collator, batch_size, device, autocast_dtype)
        width = len(cached[role][0][FEATURES])
        logger.info("Cached %d-dimensional features of %d %s rows", width, len(dataset), role)
    return CachedFeatureHead(classifier), cached


def collate_features(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {FEATURES: torch.stack([r[FEATURES] for r in rows]),
            LABEL_COLUMN: _as_targets(torch.stack([r[LABEL_COLUMN] for r in rows]))}


def _as_targets(labels: torch.Tensor) -> torch.Tensor:
    """Class ids as int64; numeric targets (regression: a float per target) kept as they are."""
    return labels.float() if labels.is_floating_point() else labels.long()
