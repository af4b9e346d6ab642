"""Test helper: `hf-finetune train ...` that dies at a chosen point, as a preempted job would.

    python tests/helpers/train_then_die.py POINT STEP hf-finetune-args...

POINT is one of:
    kill-after-step  SIGKILL once optimizer step STEP has finished (before its checkpoint, if any)
    kill-after-save  SIGKILL right after the checkpoint of step STEP is complete
    kill-mid-save    SIGKILL while saving the checkpoint of step STEP (weights written, state not)
    term-at-step     SIGTERM to itself when step STEP begins (the pipeline should checkpoint and stop)
"""

import os
import signal
import sys

from transformers import TrainerCallback, TrainerState

from hf_finetune.cli import main
from hf_finetune.training import trainer as trainer_module

POINT, STEP, ARGS = sys.argv[1], int(sys.argv[2]), sys.argv[3:]


class Die(TrainerCallback):
    signalled = False

    def on_step_begin(self, args, state, control, **kwargs):
        if POINT == "term-at-step" and state.global_step + 1 == STEP:
            Die.signalled = True
            os.kill(os.getpid(), signal.SIGTERM)

    def on_evaluate(self, args, state, control, **kwargs):
        if Die.signalled:  # a scheduler's grace period (often 30 s) has no time for an evaluation pass
            sys.stderr.write(f"EVALUATED AFTER SIGTERM at step {state.global_step}\n")

    def on_step_end(self, args, state, control, **kwargs):
        if POINT == "kill-after-step" and state.global_step == STEP:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_save(self, args, state, control, **kwargs):
        if POINT == "kill-after-save" and state.global_step == STEP:
            os.kill(os.getpid(), signal.SIGKILL)


original_init = trainer_module.FinetuneTrainer.__init__


def init_with_die(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    self.add_callback(Die())


trainer_module.FinetuneTrainer.__init__ = init_with_die

original_save = TrainerState.save_to_json


def save_or_die(self, json_path):
    if POINT == "kill-mid-save" and self.global_step == STEP and f"checkpoint-{STEP}" in json_path:
        os.kill(os.getpid(), signal.SIGKILL)
    return original_save(self, json_path)


TrainerState.save_to_json = save_or_die

if __name__ == "__main__":
    sys.exit(main(ARGS))
