"""`search`: the hyperparameter search (`hf-finetune tune`): space, objective, sampler, pruner, budget.

The checks that need the rest of the recipe (searched keys, the objective's metric, each edge of the
space) are cross-section: recipe/cross.py. No Optuna import here.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hf_finetune.recipe.sections.base import Section

# Keys a trial may not take from the space: the search sets them itself, or they are not per trial.
OWNED_BY_SEARCH = {
    "output": "each trial writes into its own folder under output.dir",
    "hub": "trials are never pushed; push the best model with `hf-finetune push OUTPUT_DIR/best`",
    "search": "the search settings are not searched",
    "training.metric_for_best_model": "each trial selects its checkpoint on the objective; set "
                                      "search.objective.metric instead",
    "training.greater_is_better": "follows the objective; set search.objective.direction instead",
    "training.resume_from_checkpoint": "trials always start from the beginning",
}


class SearchDimension(Section):
    """One searched recipe key: a number range (`low`, `high`, `log`, `step`) or a list of `choices`."""

    low: int | float | None = Field(None, description="Smallest value (numbers).")
    high: int | float | None = Field(None, description="Largest value (numbers).")
    log: bool = Field(False, description="Sample on a log scale (needs low > 0).")
    step: int | float | None = Field(None, gt=0, description="Grid step between low and high (not with log).")
    choices: list[Any] | None = Field(None, description="The values to choose from (any YAML values).")

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchDimension:
        numbers = [k for k in ("low", "high", "step") if getattr(self, k) is not None]
        if self.choices is not None:
            if numbers or self.log:
                raise ValueError("give either choices or a number range (low, high), not both")
            if not self.choices:
                raise ValueError("choices is empty; give at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (numbers), or choices: [...]")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is greater than high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self

    @property
    def is_int(self) -> bool:
        """An integer range: low, high (and step) written as whole numbers."""
        values = [v for v in (self.low, self.high, self.step) if v is not None]
        return self.choices is None and all(isinstance(v, int) for v in values)


class SearchObjective(Section):
    metric: str | None = Field(
        None, description="Validation metric to optimize (default: the run's selection metric, "
        "training.metric_for_best_model as the run resolves it); each trial also selects its checkpoint on it."
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="maximize or minimize (default: minimize for a loss, else maximize)."
    )


class SearchSampler(Section):
    type: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler: tpe (TPESampler) or random.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Sampler seed (offset by the trials already in the study).")
    startup_trials: int = Field(10, ge=0, description="tpe: random trials before the model of good trials is used.")


class SearchPruner(Section):
    type: Literal["successive_halving", "hyperband", "median", "none"] = Field(
        "successive_halving",
        description="Stops poor trials at an evaluation: successive_halving (asynchronous, ASHA), hyperband, "
        "median, or none.",
    )
    min_resource: int | Literal["auto"] = Field(
        1, description="successive_halving/hyperband: evaluations before a trial can be pruned (auto: "
        "Optuna's estimate from the first complete trial, which is never pruned against)."
    )
    reduction_factor: int = Field(3, ge=2, description="successive_halving/hyperband: keep 1 in this many per rung.")
    warmup_evaluations: int = Field(1, ge=0, description="median: evaluations before a trial can be pruned.")
    after_learning_onset: bool = Field(
        True, description="No trial is pruned before the evaluation at which the baseline trial (the recipe's "
        "defaults) first beat the trivial model, nor while the baseline trial has not yet done so: on small data "
        "every run sits at the trivial figure for its first evaluations, and pruning there keeps only the lucky."
    )

    @field_validator("min_resource")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be at least 1 (or auto), got {value}")
        return value


class SearchSpec(Section):
    """Hyperparameter search (`hf-finetune tune`): space, objective, sampler, pruner, budget, storage."""

    space: dict[str, SearchDimension] | None = Field(
        None, description="Recipe keys to search, e.g. {training.learning_rate: {low: 1e-5, high: 1e-3, log: true}} "
        "(default: a fine-tuning space, printed by tune)."
    )
    objective: SearchObjective = Field(default_factory=SearchObjective, description="What the search optimizes.")
    sampler: SearchSampler = Field(default_factory=SearchSampler, description="How trials are proposed.")
    pruner: SearchPruner = Field(default_factory=SearchPruner, description="How poor trials are stopped early.")
    trials: int = Field(20, gt=0, description="Trials in the study in all (every run and worker together); "
                                              "running tune again continues up to this many.")
    timeout: str | float | None = Field(
        None, description="Wall time of one tune command (90s, 30m, 2h or seconds); no trial starts after it."
    )
    storage: str | None = Field(
        None, description="SQLAlchemy URL of the study database (default: sqlite:///<output.dir>/study.db); "
        "one PostgreSQL/MySQL URL lets workers on several machines share the study."
    )
    study_name: str | None = Field(None, description="Study name in the storage (default: the recipe file name).")
    keep_trials: bool = Field(
        False, description="Keep every trial's model; by default only the best trial's folder stays."
    )
    baseline_trial: bool = Field(
        True, description="Trial 0 of a new study is the recipe at its own defaults (the data-aware values one "
        "run would use), so the best trial is never below one default run on validation; skipped when the space "
        "cannot take those values."
    )

    @field_validator("space", mode="before")
    @classmethod
    def _dotted_keys(cls, value: Any) -> Any:
        """Nested mappings ({training: {learning_rate: {...}}}) become dotted keys (training.learning_rate)."""
        if not isinstance(value, dict):
            return value
        flat: dict[str, Any] = {}

        def walk(node: dict, prefix: str) -> None:
            for key, item in node.items():
                dotted = f"{prefix}{key}"
                if isinstance(item, dict) and item and not set(item) & set(SearchDimension.model_fields):
                    walk(item, dotted + ".")
                else:
                    flat[dotted] = item

        walk(value, "")
        return flat

    @field_validator("timeout")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            seconds(value)
        return value


def seconds(value: str | float | int) -> float:
    """A duration in seconds from 90, 90s, 30m, 2h or 1d.

    Raises:
        ValueError: not a positive duration.
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = str(value).strip().lower()
    try:
        number = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"expected a duration such as 90s, 30m or 2h (or seconds), got {value!r}")
    return number
