"""Self-training on unlabelled data: label the pool with the model, keep the confident labels, train again.

    pool.py       loading and checking the unlabelled pool; its true labels, when it has some
    predict.py    class probabilities for the pool from the current model
    select.py     which pseudo-labels to keep: thresholds (global, per class), the class share cap
    rounds.py     the rounds: train, predict, select, train again; stop when validation stops improving
    (the model card's self-training section is report/self_training.py; the recipe checks across
    data.unlabeled and self_training are the recipe's own, recipe/cross.py)
"""

from __future__ import annotations

from typing import Any


def run(recipe: Any, *, resume: bool = False) -> Any:
    """Runs the recipe's self-training rounds and publishes the best round's model (see rounds.py)."""
    from hf_finetune.selftrain.rounds import run_self_training

    return run_self_training(recipe, resume=resume)
