"""`finetune` (LoRA keys included): which parameters train when, at which rate, with which loss; its own checks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hf_finetune.errors import Problem
from hf_finetune.recipe.sections.base import Section

Strategy = Literal["full", "linear_probe", "gradual_unfreeze", "probe_then_full", "lora"]


class LoraSpec(Section):
    """LoRA adapters (finetune.strategy: lora, through peft): low-rank updates of chosen backbone layers."""

    # Bounds that hold before the backbone is known; check and train also bound r by the width of the
    # adapted layers (a rank above min(in, out) adds nothing and once asked peft for 25 GB).
    r: int = Field(8, gt=0, le=65_536, description="LoRA rank: the inner size of each low-rank update.")
    alpha: float = Field(16, gt=0, le=10_000, allow_inf_nan=False,
                         description="LoRA scaling numerator: updates are scaled by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the input of each LoRA update.")
    target_modules: list[str] | None = Field(
        None,
        description="Backbone modules (name or name suffix) that get adapters (default per architecture: BERT "
        "family query/value, timm ViTs qkv, other timm models their linear layers; recorded).",
    )


class Finetune(Section):
    """How to fine-tune: which parameters train when, at which learning rate, with which loss."""

    strategy: Strategy = Field(
        "full",
        description="full: everything trains; linear_probe: only the new head; gradual_unfreeze: head first, "
        "then backbone blocks top-down; probe_then_full: linear probe, then full fine-tuning (LP-FT); "
        "lora: LoRA adapters on the frozen backbone, the new head in full (needs the lora extra).",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings (finetune.strategy: lora).")
    cache_features: bool = Field(
        False,
        description="linear_probe: compute frozen-backbone features once (eval preprocessing) and train the head "
        "on them.",
    )
    unfreeze_every: float = Field(
        1, gt=0, description="gradual_unfreeze: unfreeze more blocks every this many epochs (or steps)."
    )
    unfreeze_unit: Literal["epoch", "step"] = Field("epoch", description="gradual_unfreeze: unit of unfreeze_every.")
    blocks_per_unfreeze: int = Field(1, gt=0, description="gradual_unfreeze: blocks unfrozen at each stage.")
    probe_epochs: float = Field(
        1, gt=0, description="probe_then_full: epochs of linear probing before the whole model trains."
    )
    head_learning_rate: float | None = Field(
        None, gt=0, description="Learning rate of the new head (default: training.learning_rate)."
    )
    backbone_lr_scale: float = Field(
        1.0, gt=0, description="Backbone learning rate = training.learning_rate x this (e.g. 0.1)."
    )
    layer_decay: float | None = Field(
        None, gt=0, le=1,
        description="Layer-wise decay: the block d steps below the head gets backbone rate x decay^d.",
    )
    class_weights: Literal["balanced"] | list[float] | dict[str, float] | None = Field(
        None,
        description="Weighted loss: balanced (n / (classes x count)), a list in label order, or {label: weight}; "
        "the resolved recipe records the weights used.",
    )
    regression_loss: Literal["mse", "huber"] = Field(
        "mse", description="text-regression, image-regression: the loss on standardised targets: mse, or huber "
        "(delta 1 standard deviation: large errors count linearly, for noisy targets with outliers).",
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after this many evaluations without improvement of the selection metric."
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0, description="Smallest change of the selection metric that counts as an improvement."
    )
    data_aware: bool = Field(
        True,
        description="Let the data and backbone choose what the recipe leaves unset: epochs, learning rates and "
        "warmup, class weights, the selection metric, max_length, a probe on cached features for few labels on a "
        "sentence encoder, no image flips where mirroring changes the class (each logged with its reason and recorded).",
    )


# Keys that mean something for one strategy only.
STRATEGY_ONLY = {
    "cache_features": "linear_probe",
    "unfreeze_every": "gradual_unfreeze",
    "unfreeze_unit": "gradual_unfreeze",
    "blocks_per_unfreeze": "gradual_unfreeze",
    "probe_epochs": "probe_then_full",
}


def finetune_problems(ft: Finetune) -> list[Problem]:
    """Keys that only mean something for another strategy, and class weights that are not positive."""
    problems: list[Problem] = []
    default = Finetune()
    for key, strategy in STRATEGY_ONLY.items():
        if getattr(ft, key) != getattr(default, key) and ft.strategy != strategy:
            problems.append(Problem(f"finetune.{key}", f"only applies to finetune.strategy: {strategy}"))
    if ft.strategy != "lora" and "lora" in ft.model_fields_set:
        problems.append(Problem("finetune.lora", "only applies to finetune.strategy: lora"))
    if ft.strategy == "linear_probe":
        for key in ("layer_decay", "backbone_lr_scale"):
            if getattr(ft, key) != getattr(default, key):
                problems.append(Problem(f"finetune.{key}", "has no effect with linear_probe: the backbone is frozen"))
    if isinstance(ft.class_weights, list) and any(w <= 0 for w in ft.class_weights):
        problems.append(Problem("finetune.class_weights", "weights must be positive"))
    if isinstance(ft.class_weights, dict) and any(w <= 0 for w in ft.class_weights.values()):
        problems.append(Problem("finetune.class_weights", "weights must be positive"))
    return problems


def lora_problems(ft: Finetune) -> list[Problem]:
    """What a lora strategy may not combine within the section (model.pretrained: recipe/cross.py)."""
    if ft.strategy != "lora":
        return []
    problems = []
    if ft.layer_decay is not None:
        problems.append(Problem("finetune.layer_decay",
                                "has no effect with finetune.strategy: lora: the pretrained weights stay frozen and "
                                "the adapters are one block (finetune.backbone_lr_scale sets their rate)"))
    if ft.lora.target_modules is not None and not ft.lora.target_modules:
        problems.append(Problem("finetune.lora.target_modules",
                                "give at least one module name, or leave it unset for the architecture's default"))
    return problems
