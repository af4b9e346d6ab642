"""The validation report from the evaluation of the kept model, instead of a second pass over validation.

After training, validation is scored in full precision (trainer.full_precision): the figures of
the weights as saved. Where training evaluated in full precision too (no mixed-precision autocast: CPU
fp32, or a run without bf16/fp16), the evaluation at the step whose weights are kept (the best
checkpoint, or the last step) already computed those exact predictions on the same split; scoring them
again was one more pass over validation (about 6 s of the 13 s finish on imbalanced BBC, 318 validation
rows: benchmarks/README.md, issue #31). Serves every task: the report is built from the predictions as
`trainer.predict` would return them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

CHECKPOINT_STEP = re.compile(r"checkpoint-(\d+)$")


class KeptEvaluations(TrainerCallback):
    """`compute_metrics` that remembers what it scored, and the evaluations by step (the latest and the best).

    Use the instance as the Trainer's compute_metrics and add it as a callback.
    """

    def __init__(self, metrics: Any):
        self.metrics = metrics
        self._last: tuple[Any, Any] | None = None  # the latest compute_metrics call (evaluate or predict)
        self.by_step: dict[int, tuple[Any, Any, float | None]] = {}

    def __getattr__(self, name: str) -> Any:  # preprocess_logits and the rest of the task's metrics
        if name == "metrics":
            raise AttributeError(name)
        return getattr(self.metrics, name)

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        self._last = (eval_pred.predictions, eval_pred.label_ids)
        return self.metrics(eval_pred)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs):
        self.by_step, self._last = {}, None  # a trainer trained again counts its steps from 0 again

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs):
        if self._last is None or not metrics or not any(k.startswith("eval_") for k in metrics):
            return
        # Predictions can be large (segmentation masks): keep the best step's and this one's only. The best is the
        # best checkpoint's, and the best evaluation's (best_global_step), which differ where evaluations outnumber
        # saves; neither counts this evaluation yet (the Trainer compares it after on_evaluate).
        best = {_step_of(state.best_model_checkpoint), getattr(state, "best_global_step", None)}
        self.by_step = {s: v for s, v in self.by_step.items() if s in best}
        self.by_step[state.global_step] = (*self._last, metrics.get("eval_loss"))
        self._last = None

    def kept(self, trainer: Any) -> tuple[int, Any, Any, float | None] | None:
        """(step, predictions, label ids, loss) of the evaluation of the weights the trainer holds now, when
        that evaluation ran in full precision; None when validation must be scored again."""
        if trainer.model.__dict__.get("_original_forward") is not None:  # evaluated under mixed precision
            return None
        state, args = trainer.state, trainer.args
        step = _step_of(state.best_model_checkpoint) if args.load_best_model_at_end else None
        step = step if step is not None else state.global_step
        return (step, *self.by_step[step]) if step in self.by_step else None


def _step_of(checkpoint: str | None) -> int | None:
    match = CHECKPOINT_STEP.search(str(checkpoint or "").rstrip("/"))
    return int(match.group(1)) if match else None
