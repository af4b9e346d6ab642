"""data.streaming in training: the training stream read pass after pass until training.max_steps, and its
position saved with every checkpoint, so a resumed run continues where the killed one stopped.

`datasets` keeps an IterableDataset's position (`state_dict()`, `load_state_dict()`). The position that
matters is the one after the last batch *trained on*, not after the last row read: accelerate's loader
reads a batch ahead, and Trainer fetches a whole optimizer step's batches at once. So the stream's position
is noted at every batch boundary (`ResumableStream`), and a checkpoint at step s saves the one noted after
s x accumulation x batch rows (`save_position`). Without a shuffle buffer the resumed stream is exactly the
uninterrupted one; with one, datasets restores the position but not the buffer's rows (it refills the buffer),
so a few rows of the interrupted pass are skipped or read twice.

Each process of a distributed run reads its own shard (data/streaming.py) and saves its own position
(`stream-rank<N>.json` in the checkpoint). accelerate's loader would shard the stream a second time or
dispatch it from the main process; `stream_loader` gives each process its own rows, as split.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from hf_finetune.errors import DataError
from hf_finetune.files import write_text

logger = logging.getLogger(__name__)


def position_file(checkpoint: str | Path, process_index: int) -> Path:
    return Path(checkpoint) / f"stream-rank{process_index}.json"


class ResumableStream(torch.utils.data.IterableDataset):
    """The training stream as a torch IterableDataset without end (passes follow each other, each shuffled
    anew by `set_epoch`), noting its position at every batch boundary.

    Args:
        stream: this process's training stream (a `datasets.IterableDataset`, encoded on the fly).
        batch_size: rows per batch of this process (training.per_device_train_batch_size).
    """

    def __init__(self, stream: Any, batch_size: int):
        super().__init__()
        self.stream = stream
        self.batch_size = batch_size
        self.rows = 0  # rows read by training so far, every pass
        self.epoch = 0  # the pass being read
        self.positions: dict[int, dict[str, Any]] = {}  # rows read -> the position after them (batch boundaries)
        self.resume: dict[str, Any] | None = None  # the saved position the next pass starts from

    def __iter__(self):
        while True:
            current = self.stream
            if self.resume is not None:  # the resumed pass starts mid-stream; the later ones at the start
                current = copy.deepcopy(self.stream)
                current.load_state_dict(self.resume["state"])
                self.resume = None
            else:
                current.set_epoch(self.epoch)
            read = 0
            for row in current:
                yield row
                read += 1
                self.rows += 1
                if self.rows % self.batch_size == 0:
                    self.positions[self.rows] = {"rows": self.rows, "epoch": self.epoch, "state": current.state_dict()}
            if read == 0 and self.rows == 0:
                raise DataError(f"data.splits.train: the training stream gave no rows (data.max_samples.train, "
                                f"data.validation_size and the shard of this process, {self.stream!r})")
            self.epoch += 1

    def position_after(self, rows: int) -> dict[str, Any] | None:
        """The position noted after `rows` rows (None when they were not read in this process's run)."""
        return self.positions.get(rows)

    def forget_before(self, rows: int) -> None:
        """Drops the positions before `rows`: training is past them (keeps memory flat over a long run)."""
        for key in [k for k in self.positions if k < rows]:
            del self.positions[key]

    def restore(self, position: dict[str, Any]) -> None:
        """Continue from a saved position: the next row read is the one after the last row trained on."""
        self.rows, self.epoch = int(position["rows"]), int(position["epoch"])
        self.positions = {self.rows: position}
        self.resume = position


def trained_rows(trainer: Any) -> int:
    """Rows of its training stream one process has trained on at the trainer's current step."""
    args = trainer.args
    return trainer.state.global_step * args.gradient_accumulation_steps * args.per_device_train_batch_size


def save_position(trainer: Any, checkpoint: str | Path) -> None:
    """Writes this process's stream position after the rows trained so far into the checkpoint folder
    (before trainer_state.json, which Trainer writes last: a complete checkpoint always holds it)."""
    stream = trainer.train_dataset
    rows = trained_rows(trainer)
    position = stream.position_after(rows)
    if position is None:  # cannot happen while the loader reads at least to the batch trained on
        raise RuntimeError(f"no stream position noted after {rows} rows (noted: {sorted(stream.positions)[:5]})")
    Path(checkpoint).mkdir(parents=True, exist_ok=True)
    # plain JSON (no stringified fallbacks): a position that does not load back must fail here, not on resume
    write_text(position_file(checkpoint, trainer.args.process_index), json.dumps(position) + "\n")


def load_position(trainer: Any, checkpoint: str | Path) -> bool:
    """Restores the stream position saved in `checkpoint` for this process; False (logged) when absent."""
    path = position_file(checkpoint, trainer.args.process_index)
    if not path.is_file():
        logger.warning("%s holds no stream position (%s): the Trainer reads the stream again from its start and "
                       "skips the batches already trained on", checkpoint, path.name)
        return False
    position = json.loads(path.read_text())
    step = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]  # Trainer loads it later
    args = trainer.args
    expected = step * args.gradient_accumulation_steps * args.per_device_train_batch_size
    if int(position["rows"]) != expected:
        raise DataError(f"{path}: the saved stream position is after {position['rows']} rows, but {step} steps "
                        f"of this run's batch split train on {expected} rows: the batch size or gradient "
                        "accumulation changed since the checkpoint (a stream resumes with the same batch split)")
    trainer.train_dataset.restore(position)
    logger.info("Resuming the training stream after row %d (pass %d) of this process, from %s", position["rows"],
                position["epoch"] + 1, path)
    return True


def stream_loader(trainer: Any, stream: ResumableStream, batch_size: int) -> Any:
    """This process's loader over its own shard: accelerate's loader (device placement, end-of-data state)
    without the re-sharding or dispatching it would apply to an iterable dataset under several processes."""
    from accelerate.data_loader import prepare_data_loader

    args = trainer.args
    loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, collate_fn=trainer.data_collator,
                                         num_workers=0, pin_memory=args.dataloader_pin_memory)
    prepared = prepare_data_loader(loader, device=args.device, num_processes=1, process_index=0,
                                   put_on_device=True, dispatch_batches=False)
    trainer.accelerator._dataloaders.append(prepared)  # as accelerator.prepare() registers it (save_state)
    return prepared


class ForgetTrainedPositions(TrainerCallback):
    """Keeps only the positions training has not passed yet."""

    def __init__(self, stream: ResumableStream):
        self.stream = stream

    def on_step_end(self, args, state, control, **kwargs):
        self.stream.forget_before(state.global_step * args.gradient_accumulation_steps
                                  * args.per_device_train_batch_size)


# data-aware defaults that read the number of training rows, which a stream does not know (its head is not
# the data): a linear probe on cached features for few rows, the number of passes
ROW_COUNT_DEFAULTS = ("finetune.strategy", "finetune.cache_features", "training.num_train_epochs")


def stream_decisions(decisions: list[Any], head_rows: int) -> list[Any]:
    """The data-aware decisions that hold on a stream: those read from the class counts of its head; the ones
    that read the row count are left out, said in the log."""
    kept = [d for d in decisions if d.key not in ROW_COUNT_DEFAULTS]
    for d in decisions:
        if d.key in ROW_COUNT_DEFAULTS:
            logger.info("Data-aware default %s = %s not applied: it reads the number of training rows, which a "
                        "stream does not know (the other defaults read the first %d rows)", d.key, d.value, head_rows)
    return kept
