"""`self_training`: rounds of pseudo-labelling `data.unlabeled` (the pool and the section together are
checked in recipe/cross.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from hf_finetune.recipe.sections.base import Section

# The default teacher rule: a pseudo-label at probability 0.9 or more, or among the top fifth of its predicted
# class. A fixed 0.9 kept 0 of 552 sentiment reviews from a few-label probe (issue 34: its probabilities never
# got there); a share relative to the teacher's own confidence always starts. Measured on VADER sentiment with a
# pool of 10x the labels (benchmarks/README.md, few-label section, 3 seeds): from a probe teacher at 8 per class
# 0.9 alone kept 0-21 of 240 rows, this rule 47-48 at 67-68% accuracy (the pool: 51-55%); at 8-32 per class
# it kept 47-417 rows at 66-79%. Whether a round then helps is another matter: against labelled-only
# fine-tuning one round ranged -0.047 to +0.042 macro-F1.
DEFAULT_TOP_SHARE = 0.2
# The default cap: a class keeps at most this many pseudo-labels per labelled training row of that class in a
# round (its most confident ones). A fine-tuned teacher is confident, right or wrong: on a pool of 10x the labels
# the rule above kept 95-661 of 240-960 VADER texts at 56-74% accuracy, about 7 pseudo-labels to a true label,
# and the round scored below its round 0 on VADER at 8 per class (-0.020). One teacher per cell, the round's
# change in test macro-F1 over it, mean of 3 seeds at 8 / 16 / 32 labels per class
# (benchmarks/self_training_caps.py, 2026-12-05; benchmarks/README.md, few-label section):
#   no cap                 VADER -0.020 / -0.002 / +0.017   NRC words +0.015 / +0.013 / +0.033   (11 of 18 up)
#   1 per labelled row     VADER +0.042 / +0.001 / -0.004   NRC words -0.005 / +0.004 / +0.005   (13 of 18 up)
#   2 per labelled row     VADER +0.015 / +0.019 / +0.010   NRC words +0.010 / -0.001 / +0.032   (14 of 18 up)
# Two tasks, and the cap was chosen on them: the next task is where it is tested.
DEFAULT_MAX_PER_LABELLED = 2.0


class SelfTraining(Section):
    """Self-training: label the unlabelled pool with the model, keep the confident labels, train again."""

    rounds: int = Field(3, gt=0, le=100, description="Self-training rounds after the first, labelled-only training.")
    threshold: float = Field(
        0.9, gt=0, le=1, description="Keep a pseudo-label when the model's probability for it is at least this.",
    )
    top_share: float | None = Field(
        None, gt=0, le=1,
        description="Also keep each predicted class's most confident share of the pool rows, whatever their "
        "probability (relative to the teacher's own confidence). Unset: 0.2 while threshold is unset, else off.",
    )
    class_thresholds: dict[str, float] | None = Field(
        None, description="Thresholds for some classes ({label: threshold}); the others use threshold.",
    )
    max_class_share: float | None = Field(
        None, gt=0, le=1,
        description="Largest share of a round's pseudo-labels one class may take (the most confident are kept); "
        "unset: no cap.",
    )
    max_per_labelled: float | None = Field(
        DEFAULT_MAX_PER_LABELLED, gt=0,
        description="A class keeps at most this many pseudo-labels per labelled training row of that class in a "
        "round (its most confident), so the true labels are not outweighed by the teacher's guesses; null: no cap.",
    )
    init: Literal["backbone", "continue"] = Field(
        "backbone",
        description="Each round trains from the pretrained backbone with a new head (backbone), or goes on from "
        "the previous best round's model (continue).",
    )
    min_improvement: float = Field(
        0.0, ge=0,
        description="A round must raise the validation selection metric by more than this, else self-training stops.",
    )
    score_test_each_round: bool = Field(
        False, description="Also score the test split after every round, for measurement (never used to choose).",
    )

    def resolved_top_share(self) -> float | None:
        """The top share a run uses: the recipe's, else DEFAULT_TOP_SHARE unless the recipe sets a threshold."""
        if "top_share" in self.model_fields_set or "threshold" in self.model_fields_set:
            return self.top_share
        return DEFAULT_TOP_SHARE

    @field_validator("class_thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for label, threshold in (value or {}).items():
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
                raise ValueError(f"the threshold of '{label}' must be in (0, 1], got {threshold!r}")
        return value
