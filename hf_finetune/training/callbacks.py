"""Trainer callbacks that keep a run safe: preemption checkpoints and a stop on non-finite loss."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


def any_process(flag: bool, trainer: Any) -> bool:
    """True when `flag` is true on any process, so all processes take the same decision together."""
    accelerator = trainer.accelerator
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


class PreemptionCallback(TrainerCallback):
    """SIGTERM/SIGINT: finish the current optimizer step, save a checkpoint, stop.

    The signal only sets a flag; at the next step boundary every process agrees to stop (one
    all-reduce), so all of them save the same step. A second SIGINT stops at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.trainer: Any = None
        self.received: int | None = None
        self.stopped_at_step: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now, without a checkpoint
        self.received = signum
        logger.warning("%s received: saving a checkpoint at the end of this step, then stopping",
                       signal.Signals(signum).name)

    def on_step_end(self, args, state, control, **kwargs):
        if any_process(self.received is not None, self.trainer):
            control.should_save = True
            control.should_training_stop = True
            # No evaluation pass before stopping: a scheduler's grace period (often 30 s) may not
            # cover one, and the checkpoint is all a resume needs.
            control.should_evaluate = False
            self.stopped_at_step = state.global_step
            if self.received is None:
                self.received = signal.SIGTERM  # another process was signalled
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stopped_at_step is not None:  # stopping ended the epoch: no epoch-end evaluation or save
            control.should_evaluate = False
            control.should_save = False
        return control


class NonFiniteLossError(RuntimeError):
    def __init__(self, step: int, epoch: float):
        self.step, self.epoch = step, epoch
        super().__init__(f"non-finite loss at step {step}")


class NonFiniteLossCallback(TrainerCallback):
    """Stops before an optimizer step whose loss was NaN or infinite, so no weight is corrupted.

    The trainer flags a non-finite loss in `compute_loss`; here, before the optimizer step, the
    processes agree and all raise together. The weights in memory and every checkpoint on disk
    stay as they were after the last good step.
    """

    def __init__(self) -> None:
        self.trainer: Any = None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        trainer = self.trainer
        bad = trainer.nonfinite_loss_seen
        trainer.nonfinite_loss_seen = False
        if any_process(bad, trainer):
            raise NonFiniteLossError(step=state.global_step + 1, epoch=state.epoch or 0.0)
        return control


def is_finite(loss: torch.Tensor) -> bool:
    return bool(torch.isfinite(loss.detach()).all())
