"""Length-grouped batching whose order depends only on (seed, epoch).

`transformers`' LengthGroupedSampler draws its permutation from the global torch RNG when an epoch
starts, so the order after a resume differs from the order of an uninterrupted run. Here each epoch
has its own generator, seeded from the run's seed and the epoch number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


class SeededLengthGroupedSampler(Sampler[int]):
    """Every index once per epoch; batches of similar lengths; the same order for the same epoch.

    Args:
        lengths: tokens per row.
        batch_size: rows per optimizer step on one process (megabatches are sorted in chunks of it).
        seed: the run's seed.
        epoch_source: returns the current epoch; used at the start of each pass (the trainer's
            state is authoritative, also right after a resume). Without it, `set_epoch` decides.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int,
                 epoch_source: Callable[[], int] | None = None):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.epoch_source = epoch_source

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch_source() if self.epoch_source is not None else self.epoch
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))
