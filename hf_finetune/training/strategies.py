"""Fine-tuning strategies: which blocks train when, and each block's learning rate.

    full               every parameter trains
    linear_probe       the backbone stays frozen; only the new head trains
    gradual_unfreeze   the head first, then backbone blocks from the top down, a few more every N
                       epochs (or steps), until the whole model trains
    probe_then_full    a linear probe for `probe_epochs`, then the whole model (LP-FT)
    lora               LoRA adapters on the frozen backbone and the new head (training/lora.py)

Learning rates: the head gets `head_learning_rate` (default: training.learning_rate); the backbone
gets learning_rate x backbone_lr_scale, times layer_decay^d for the block d steps below the head.
Biases and normalization parameters get no weight decay. The optimizer holds every parameter from
the start (a frozen one has no gradient, so AdamW leaves it bit-identical), so unfreezing needs no
new optimizer and a resumed run rebuilds the same phase from the step counter.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from transformers import TrainerCallback

from hf_finetune.models.blocks import ModelParts, no_weight_decay, split_model
from hf_finetune.recipe import Finetune

logger = logging.getLogger(__name__)

_EPS = 1e-9  # epochs are floats that land exactly on whole numbers at epoch ends


@dataclass
class Schedule:
    """How many backbone blocks (counted from the top) train at a point of training."""

    strategy: str
    num_blocks: int
    unfreeze_every: float = 1
    unfreeze_unit: str = "epoch"
    blocks_per_unfreeze: int = 1
    probe_epochs: float = 1

    def trainable_blocks(self, epoch: float, step: int) -> int:
        if self.strategy in ("full", "lora"):
            return self.num_blocks
        if self.strategy == "linear_probe":
            return 0
        if self.strategy == "probe_then_full":
            return 0 if epoch + _EPS < self.probe_epochs else self.num_blocks
        progress = epoch if self.unfreeze_unit == "epoch" else step
        stage = math.floor(progress / self.unfreeze_every + _EPS)
        return min(self.num_blocks, stage * self.blocks_per_unfreeze)

    @property
    def changes_during_training(self) -> bool:
        return self.strategy in ("gradual_unfreeze", "probe_then_full")


class FreezeController:
    """Makes the top `n` backbone blocks (and the head) trainable and everything else frozen.

    With one process, freezing sets `requires_grad`, so frozen blocks cost no backward compute.
    With several processes and a schedule that unfreezes later, every parameter must require grad
    when DDP wraps the model (DDP never syncs a parameter that did not), so frozen parameters keep
    `requires_grad` and their gradients are dropped before clipping and the optimizer step instead.
    """

    def __init__(self, parts: ModelParts, drop_grads: bool):
        self.parts = parts
        self.drop_grads = drop_grads
        self.trainable = len(parts.blocks)
        self._frozen: list[nn.Parameter] = []

    def apply(self, trainable_blocks: int) -> None:
        self.trainable = trainable_blocks
        first_trainable = len(self.parts.blocks) - trainable_blocks
        self._frozen = []
        for index, block in enumerate(self.parts.blocks):
            frozen = index < first_trainable
            for _, param in block.params:
                if frozen:
                    self._frozen.append(param)
                param.requires_grad_(self.drop_grads or not frozen)
        for _, param in self.parts.head.params:
            param.requires_grad_(True)

    def drop_frozen_grads(self) -> None:
        if self.drop_grads:
            for param in self._frozen:
                param.grad = None

    def trainable_parameters(self) -> int:
        first = len(self.parts.blocks) - self.trainable
        return self.parts.head.num_params + sum(b.num_params for b in self.parts.blocks[first:])

    def describe(self) -> str:
        if self.trainable == 0:
            return "head only"
        if self.trainable == len(self.parts.blocks):
            if self.parts.frozen and len(self.parts.blocks) == 1:  # LoRA: the adapters; the backbone stays frozen
                return "head + " + ", ".join(b.name for b in self.parts.blocks)
            return "all blocks"
        top = self.parts.blocks[len(self.parts.blocks) - self.trainable:]
        return f"head + top {self.trainable} blocks (from {top[0].name})"


@dataclass
class FinetunePlan:
    """Everything the trainer needs to apply the recipe's `finetune` section to one model."""

    parts: ModelParts
    schedule: Schedule
    freeze: FreezeController
    param_groups: list[dict[str, Any]]
    phases: list[dict[str, Any]] = field(default_factory=list)  # filled while training
    applied: bool = False  # the freezing of the current phase is applied to this model instance

    def restore_phases(self, phases: list[dict[str, Any]]) -> None:
        """The phases a resumed run went through before its checkpoint (the freezing is applied anew)."""
        self.phases = [dict(p) for p in phases]

    def group_summary(self) -> list[dict[str, Any]]:
        return [{"name": g["name"], "params": sum(p.numel() for p in g["params"]), "lr": g["lr"],
                 "weight_decay": g["weight_decay"]} for g in self.param_groups]


def build_param_groups(parts: ModelParts, ft: Finetune, learning_rate: float, weight_decay: float,
                       skip_decay: set[str]) -> list[dict[str, Any]]:
    """Optimizer groups: per block a learning rate, split by whether weight decay applies."""
    head_lr = ft.head_learning_rate or learning_rate
    backbone_lr = learning_rate * ft.backbone_lr_scale
    groups: list[dict[str, Any]] = []

    def add(name: str, params: list[tuple[str, nn.Parameter]], lr: float) -> None:
        decay = [p for n, p in params if not no_weight_decay(n, p, skip_decay)]
        plain = [p for n, p in params if no_weight_decay(n, p, skip_decay)]
        if decay:
            groups.append({"name": name, "params": decay, "lr": lr, "weight_decay": weight_decay})
        if plain:
            groups.append({"name": f"{name} (no decay)", "params": plain, "lr": lr, "weight_decay": 0.0})

    for index, block in enumerate(parts.blocks):
        depth = parts.depth_of(index)
        factor = ft.layer_decay**depth if ft.layer_decay is not None else 1.0
        add(block.name, block.params, backbone_lr * factor)
    add("head", parts.head.params, head_lr)
    return groups


def _no_decay_names(model: nn.Module) -> set[str]:
    """Parameters a model itself exempts from weight decay (timm: position embeddings, class token)."""
    inner = getattr(model, "timm_model", model)
    getter = getattr(inner, "no_weight_decay", None)
    return set(getter()) if callable(getter) else set()


def build_plan(model: nn.Module, ft: Finetune, args: Any) -> FinetunePlan:
    """The plan for `model`: its blocks, the unfreezing schedule and the optimizer groups."""
    if ft.strategy == "lora":
        from hf_finetune.training.lora import lora_parts

        parts = lora_parts(model)
    else:
        parts = split_model(model)
    schedule = Schedule(
        strategy=ft.strategy,
        num_blocks=len(parts.blocks),
        unfreeze_every=ft.unfreeze_every,
        unfreeze_unit=ft.unfreeze_unit,
        blocks_per_unfreeze=ft.blocks_per_unfreeze,
        probe_epochs=ft.probe_epochs,
    )
    freeze = FreezeController(parts, drop_grads=args.world_size > 1 and schedule.changes_during_training)
    freeze.apply(schedule.trainable_blocks(0.0, 0))
    groups = build_param_groups(parts, ft, args.learning_rate, args.weight_decay, _no_decay_names(model))
    return FinetunePlan(parts=parts, schedule=schedule, freeze=freeze, param_groups=groups)


class StrategyCallback(TrainerCallback):
    """Moves to the phase the schedule asks for at each step (from the trainer's own counters, so a
    resumed run lands in the same phase), logs what trains, and drops frozen gradients."""

    def __init__(self, plan: FinetunePlan):
        self.plan = plan

    def _update(self, state) -> None:
        wanted = self.plan.schedule.trainable_blocks(state.epoch or 0.0, state.global_step)
        if self.plan.applied and wanted == self.plan.freeze.trainable:
            return
        resumed_in_phase = (not self.plan.applied and self.plan.phases
                            and self.plan.phases[-1]["trainable_blocks"] == wanted)
        self.plan.freeze.apply(wanted)
        self.plan.applied = True
        if resumed_in_phase:
            return  # a resumed run goes on in the phase its checkpoint was in: not a new phase
        phase = {
            "phase": len(self.plan.phases),
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "training": self.plan.freeze.describe(),
            "trainable_blocks": wanted,
            "trainable_params": self.plan.freeze.trainable_parameters(),
        }
        self.plan.phases.append(phase)
        total = (self.plan.parts.head.num_params + sum(b.num_params for b in self.plan.parts.blocks)
                 + self.plan.parts.frozen)
        logger.info("Phase %d from step %d (epoch %.2f): %s train, %s of %s parameters",
                    phase["phase"], phase["step"], phase["epoch"], phase["training"],
                    f"{phase['trainable_params']:,}", f"{total:,}")

    def on_train_begin(self, args, state, control, **kwargs):
        self._update(state)
        for group in self.plan.group_summary():
            logger.info("  param group %-40s %10s params  lr %.3g  weight decay %g",
                        group["name"], f"{group['params']:,}", group["lr"], group["weight_decay"])

    def on_step_begin(self, args, state, control, **kwargs):
        self._update(state)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.plan.freeze.drop_frozen_grads()
