"""`rank`: scoring candidate backbones on frozen features (`hf-finetune rank`), before any fine-tuning."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from hf_finetune.errors import Problem
from hf_finetune.recipe.sections.base import Section
from hf_finetune.recipe.sections.model import ModelSpec

RankScore = Literal["logme", "knn", "probe", "hscore"]  # frozen-feature scores


class RankSpec(Section):
    """`hf-finetune rank`: score candidate backbones on frozen features before any fine-tuning."""

    candidates: list[ModelSpec] | None = Field(
        None,
        description="Backbones to rank: model.name values, or model sections ({name: ..., pretrained: false}); "
        "`--candidates` on the command line replaces them.",
    )
    by: RankScore | Literal["finetune"] = Field(
        "logme", description="Score that orders the table and picks the winner: logme, knn, probe or hscore "
        "(frozen features), or finetune: the shortlist fine-tuned, with successive halving, ordered by validation."
    )
    shortlist: int | None = Field(
        None, gt=0, description="by finetune: how many pretrained candidates to fine-tune, the best by shortlist_by "
        "(untrained ones are always fine-tuned); default: every candidate (rank.budget plans the cost; at 1,000 "
        "digits a shortlist of 3 by LogME left out the network that fine-tuned best)."
    )
    shortlist_by: RankScore = Field("logme", description="by finetune: the frozen score that makes the shortlist.")
    reduction_factor: int = Field(3, ge=2, description="by finetune: successive halving keeps 1 in this many "
                                                      "candidates at each rung.")
    budget: float = Field(
        1.0, gt=0, le=100, description="by finetune: the fine-tuning's total training, in full runs of the recipe. "
        "Every shortlisted candidate trains the same share of its run, the best 1 in reduction_factor go on from "
        "their checkpoints, and so on; the last rung ends at the whole run only where the budget reaches it "
        "(about 1.6 runs for 4 candidates at reduction factor 3). Halving waits at a rung where a place that goes "
        "on would go to a candidate that has not learned yet (one rung after the first learned), and ties at a cut "
        "go on together; what those spend comes off the later rungs, and where the budget runs out first halving "
        "stops there and says so (on 300 digits, five candidates: at 20% of their runs, where the plan went on to "
        "60%)."
    )
    finetune_epochs: float | None = Field(
        None, gt=0, le=10_000, description="by finetune: epochs of each candidate's full run, which rank.budget "
        "counts in (default: the recipe's own, data-aware ones included)."
    )
    frozen_scores: bool | None = Field(
        None, description="by finetune: also score every candidate on frozen features (the table's LogME, k-NN, "
        "probe columns). Default: only where rank.shortlist picks by them; with every candidate fine-tuned they "
        "decide nothing and cost a pass over the data per backbone (a third of the mode's time at 1,000 digits); "
        "rank.hscore: true asks for them too."
    )
    hscore: bool = Field(False, description="Also compute the H-score (Ledoit-Wolf shrinkage covariance).")
    knn_k: int = Field(5, gt=0, description="Neighbours of the k-NN validation accuracy (cosine similarity).")
    batch_size: int = Field(32, gt=0, description="Rows per forward pass while extracting features.")
    output_dir: str | None = Field(
        None, description="Where rank.json and rank.png go (default: <output.dir>-rank)."
    )
    cache_dir: str | None = Field(
        None, description="Feature cache (default: rank-features in data.cache_dir, or in the datasets cache's hf_finetune folder)."
    )

    @field_validator("candidates", mode="before")
    @classmethod
    def _names_are_model_sections(cls, value: Any) -> Any:
        """A bare name is the model section {name: NAME}."""
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value


def rank_problems(rank: RankSpec, writable: bool = False) -> list[Problem]:
    """rank.by's score is computed; with `writable`, rank's folders can be written (found by check)."""
    from hf_finetune.recipe.sections.output import folder_problems

    problems = folder_problems({"rank.output_dir": rank.output_dir, "rank.cache_dir": rank.cache_dir}, writable)
    if rank.by == "hscore" and not rank.hscore:  # found by `check`, not after loading models
        problems.append(Problem("rank.by", "hscore needs rank.hscore: true"))
    if rank.by == "finetune" and rank.shortlist_by == "hscore" and not rank.hscore:
        problems.append(Problem("rank.shortlist_by", "hscore needs rank.hscore: true"))
    if rank.frozen_scores is False and rank.by != "finetune":
        problems.append(Problem("rank.frozen_scores", f"rank.by: {rank.by} orders by a frozen score; "
                                "false is for rank.by: finetune"))
    elif rank.frozen_scores is False and rank.shortlist is not None:
        problems.append(Problem("rank.frozen_scores", f"rank.shortlist picks by the frozen score {rank.shortlist_by}; "
                                "false needs rank.shortlist unset (every candidate fine-tuned)"))
    elif rank.frozen_scores is False and rank.hscore:
        problems.append(Problem("rank.hscore", "the H-score is a frozen-feature score, and rank.frozen_scores: false "
                                "leaves those out"))
    return problems


def scores_frozen(rank: RankSpec) -> bool:
    """Whether `rank` scores the candidates on frozen features: always where they order the table or make
    rank.finetune's shortlist; with every candidate fine-tuned, where rank.frozen_scores asks (or, left unset,
    where rank.hscore asks for one of them)."""
    if rank.by != "finetune" or rank.shortlist is not None:
        return True
    return rank.frozen_scores if rank.frozen_scores is not None else rank.hscore
