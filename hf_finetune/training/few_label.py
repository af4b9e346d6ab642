"""The few-label probe's settings, chosen by k-fold cross-validation on the labelled rows themselves.

With a few dozen labels, a validation carve of 10% holds one or two rows per class: selecting the
epoch on it is a coin toss (issue 34: 5 carved sentiment rows chose an epoch at validation F1 0.82
that scored 0.22 on test). A probe on cached features costs one linear layer, so the whole training
schedule is cheap to replay: every candidate (epochs x weight decay) is trained on k-1 folds of the
training rows and scored (macro-F1) on the held-out fold, exactly as the Trainer will train it
(AdamW at the probe rate, linear warmup and decay, the run's batch size, class weights); the best
mean wins and the run then trains on all training rows for that schedule and keeps its last epoch.

Pure functions on tensors, so the rule is tested on its own; data_aware.py decides when it applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

# Below this many validation rows per class, selecting on validation is noise: select by k-fold instead.
KFOLD_BELOW_VALIDATION_ROWS_PER_CLASS = 10
MAX_FOLDS = 5  # fewer when the rarest class has fewer rows (each fold holds at least one row per class)
# Candidates: the probe's whole schedule. Epochs span a few passes (early stopping as regularisation) to the
# probe's longest run; weight decay spans none to strong (AdamW's decoupled decay: lr x wd per step).
# Measured on VADER sentiment and NRC emotion words at 8, 16 and 32 labels per class, seeds 0-1 (12 runs, a grid
# with weight decay 0.1 too; benchmarks/README.md, few-label section): the held-out macro-F1 of the schedules
# spread 0.05-0.22 within a run (3 epochs was the worst on 8 of 12), the chosen schedule trained on all rows
# scored -0.02..+0.04 test macro-F1 against a fixed 50 epochs, and the whole table took 2-9 s on one thread.
# Most of the gain over the old default is not choosing an epoch on the carve; the k-fold keeps the schedule
# itself from being a guess.
EPOCH_CANDIDATES = (3, 10, 25, 50)
WEIGHT_DECAY_CANDIDATES = (0.0, 1.0, 3.0)
HEAD_INIT_STD = 0.02  # BERT's initializer_range: the new head's weights start as the model's own do


@dataclass(frozen=True)
class ProbeChoice:
    """The probe schedule k-fold chose, and the table it chose from."""

    epochs: int
    weight_decay: float
    folds: int
    score: float  # mean held-out macro-F1 of the chosen schedule
    spread: float  # its standard deviation over folds
    table: tuple[tuple[int, float, float], ...]  # (epochs, weight decay, mean macro-F1) of every candidate

    def describe(self) -> str:
        worst = min(self.table, key=lambda row: row[2])
        return (f"{self.folds}-fold cross-validation on the training rows chose {self.epochs} epochs at weight "
                f"decay {self.weight_decay:g} (held-out macro-F1 {self.score:.3f} +- {self.spread:.3f}; the worst of "
                f"{len(self.table)} schedules {worst[2]:.3f} at {worst[0]} epochs, decay {worst[1]:g})")


def fold_count(labels: np.ndarray) -> int:
    """How many folds the labels allow: at most MAX_FOLDS, and no more than the rarest class's rows (>= 2)."""
    counts = np.bincount(labels)
    present = counts[counts > 0]
    return int(max(2, min(MAX_FOLDS, present.min() if len(present) else 2)))


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out row indices of each fold: every class's rows dealt round-robin in a seeded order."""
    rng = np.random.default_rng(seed)
    out: list[list[int]] = [[] for _ in range(folds)]
    offset = 0
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        for i, row in enumerate(rows):
            out[(offset + i) % folds].append(int(row))
        offset += len(rows)  # the next class starts where this one stopped, so folds stay even in size
    return [np.sort(np.array(f, dtype=np.int64)) for f in out]


def macro_f1(truth: np.ndarray, predicted: np.ndarray, num_labels: int) -> float:
    """Macro-F1 over the classes present in `truth` or `predicted` (as scikit-learn's average='macro')."""
    scores = []
    for c in range(num_labels):
        tp = int(((predicted == c) & (truth == c)).sum())
        fp = int(((predicted == c) & (truth != c)).sum())
        fn = int(((predicted != c) & (truth == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def train_probe(features: torch.Tensor, labels: torch.Tensor, num_labels: int, *, epochs: int, lr: float,
                weight_decay: float, batch_size: int, warmup_share: float, class_weights: torch.Tensor | None,
                seed: int) -> nn.Linear:
    """A linear head trained as the Trainer trains the cached-feature probe (AdamW, linear warmup and decay)."""
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(features.shape[1], num_labels)
    with torch.no_grad():
        head.weight.normal_(0.0, HEAD_INIT_STD, generator=generator)
        head.bias.zero_()
    optimizer = torch.optim.AdamW([{"params": [head.weight], "weight_decay": weight_decay},
                                   {"params": [head.bias], "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    total = epochs * steps_per_epoch
    warmup = math.ceil(warmup_share * total) if warmup_share < 1 else int(warmup_share)

    def factor(step: int) -> float:  # transformers' get_linear_schedule_with_warmup
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights)
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), batch_size):
            rows = order[start:start + batch_size]
            optimizer.zero_grad()
            loss_fn(head(features[rows]), labels[rows]).backward()
            optimizer.step()
            schedule.step()
    return head


def choose_probe_schedule(features: torch.Tensor, labels: np.ndarray, num_labels: int, *, lr: float,
                          batch_size: int, warmup_share: float, class_weights: torch.Tensor | None = None,
                          seed: int = 42, epochs: tuple[int, ...] = EPOCH_CANDIDATES,
                          weight_decays: tuple[float, ...] = WEIGHT_DECAY_CANDIDATES) -> ProbeChoice:
    """The (epochs, weight decay) whose probe scores the best mean held-out macro-F1 over stratified folds.

    Ties go to the earlier candidate in (epochs, weight decay) order: fewer epochs, then less decay.

    Args:
        features: (rows, width) cached classifier inputs of the training rows.
        labels: (rows,) class ids.
        num_labels: the size of the label space.
        lr, batch_size, warmup_share, class_weights: the run's probe settings.
        seed: the run's seed (folds and initialisation).
    """
    features = features.float()
    labels = np.asarray(labels, dtype=np.int64)
    folds = fold_count(labels)
    held_out = stratified_folds(labels, folds, seed)
    target = torch.from_numpy(labels)
    table: list[tuple[int, float, float]] = []
    best: tuple[float, float, int, float] | None = None
    for n_epochs in epochs:
        for decay in weight_decays:
            fold_scores = []
            for k, test_rows in enumerate(held_out):
                train_rows = torch.from_numpy(np.setdiff1d(np.arange(len(labels)), test_rows))
                head = train_probe(features[train_rows], target[train_rows], num_labels, epochs=n_epochs, lr=lr,
                                   weight_decay=decay, batch_size=batch_size, warmup_share=warmup_share,
                                   class_weights=class_weights, seed=seed + k)
                with torch.no_grad():
                    predicted = head(features[torch.from_numpy(test_rows)]).argmax(-1).numpy()
                fold_scores.append(macro_f1(labels[test_rows], predicted, num_labels))
            mean = float(np.mean(fold_scores))
            table.append((n_epochs, decay, mean))
            if best is None or mean > best[0] + 1e-12:
                best = (mean, float(np.std(fold_scores)), n_epochs, decay)
    assert best is not None
    return ProbeChoice(epochs=best[2], weight_decay=best[3], folds=folds, score=best[0], spread=best[1],
                       table=tuple(table))


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny matrices: one thread is faster than several (and far faster on cores shared with other work)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def training_features(model: nn.Module, train: Any, collator: Any, batch_size: int, device: torch.device,
                      autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """The classifier inputs of the training rows and their class ids (as the cached-feature probe sees them)."""
    from hf_finetune.data.labels import LABEL_COLUMN
    from hf_finetune.models.features import FEATURES, extract_features, find_classifier

    table = extract_features(model, find_classifier(model), train, collator, batch_size, device, autocast_dtype)
    table = table.with_format("numpy")
    return torch.from_numpy(np.asarray(table[FEATURES], dtype=np.float32)), np.asarray(table[LABEL_COLUMN], dtype=np.int64)


FeatureSource = Callable[[], tuple[torch.Tensor, np.ndarray]]
