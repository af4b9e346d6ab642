"""Class probabilities for the unlabelled pool from the current model, preprocessed as evaluation is."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset

from hf_finetune.data.unlabeled import Pool
from hf_finetune.recipe import Recipe
from hf_finetune.tasks import task_of
from hf_finetune.training.trainer import run_precision


def model_ready_pool(recipe: Recipe, pool: Pool, tokenizer: Any, preprocessing: dict[str, Any]) -> Dataset:
    """The pool tokenized (cached, like the splits) or with the evaluation image transform, without labels."""
    return task_of(recipe).inputs.unlabelled_dataset(recipe, pool.rows, preprocessing, tokenizer)


@torch.inference_mode()
def predict_probabilities(model: Any, dataset: Dataset, collator: Any, batch_size: int, args: Any) -> np.ndarray:
    """(rows, classes) softmax probabilities of `model` in evaluation mode, in the dataset's row order."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator,
                                         num_workers=args.dataloader_num_workers)
    device = next(model.parameters()).device
    half = run_precision(args)
    was_training = model.training
    model.eval()
    out = []
    try:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            with torch.autocast(device.type, dtype=half or torch.float32, enabled=half is not None):
                logits = model(**batch).logits
            out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels), dtype=np.float32)
