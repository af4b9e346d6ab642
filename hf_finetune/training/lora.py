"""LoRA fine-tuning through peft: low-rank adapters on a frozen backbone, the new head in full.

    finetune.strategy: lora
    finetune.lora: {r: 8, alpha: 16, dropout: 0.1, target_modules: [query, value]}

What trains: a rank-r update B @ A (scaled by alpha / r) beside each targeted layer of the frozen
backbone, and the new head, whole (peft's `modules_to_save`: the head gets a trainable copy).
Default targets per architecture: for transformers models peft's own table by model type (BERT,
RoBERTa: query, value; DistilBERT: q_lin, v_lin; GPT-2: c_attn); for timm models the fused
attention projection `qkv` where there is one (ViT family), else the backbone's linear layers
(ConvNeXt's MLPs), and a clear error for networks made of convolutions only.

The run's optimizer, learning rates, class weights, early stopping and checkpoints work as for the
other strategies: the adapters are the only backbone "block" and train at training.learning_rate x
finetune.backbone_lr_scale, the head at finetune.head_learning_rate. Checkpoints hold the adapter
(peft's adapter_model.safetensors), which is what resume and load_best_model_at_end read back.

At the end the adapters are merged into the backbone (`merge_and_unload`), so the output folder
is an ordinary model that `pipeline()` loads; `output.save_adapter: true` also keeps the adapter in
peft's layout in `<output.dir>/adapter/` (`load_adapter_model` puts it back on the base model).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from hf_finetune.errors import ModelError, UserError
from hf_finetune.extras import require
from hf_finetune.models.blocks import Block, ModelParts, clean_name, split_model

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"  # <output.dir>/adapter: adapter_config.json + adapter_model.safetensors
PURPOSE = "finetune.strategy: lora"
_ADAPTED = (nn.Linear, nn.Conv2d)  # what the error lists as candidate targets (peft adapts more)
# Encoders that peft's table (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING) leaves out: their
# attention query and value projections, as the table gives for BERT.
MORE_DEFAULTS = {"distilbert": ["q_lin", "v_lin"], "mpnet": ["q", "v"], "albert": ["query", "value"],
                 "electra": ["query", "value"], "xlm-roberta": ["query", "value"], "camembert": ["query", "value"]}


def head_modules(model: nn.Module) -> list[str]:
    """The modules that own the new head's parameters (`classifier`; for timm models
    `timm_model.<pretrained_cfg['classifier']>`, e.g. timm_model.fc): peft's modules_to_save."""
    return sorted({clean_name(name).rsplit(".", 1)[0] for name, _ in split_model(model).head.params})


def default_target_modules(model: nn.Module) -> tuple[list[str], str]:
    """The modules to adapt when the recipe names none, and why.

    Raises:
        ModelError: naming finetune.lora.target_modules when the architecture has no sensible default.
    """
    timm_model = getattr(model, "timm_model", None)
    if timm_model is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        model_type = getattr(model.config, "model_type", None)
        DEFAULTS = {**MORE_DEFAULTS, **DEFAULTS}
        if model_type in DEFAULTS:
            return list(DEFAULTS[model_type]), f"peft's default for {model_type}: the attention projections"
        raise ModelError(f"finetune.lora.target_modules: peft has no default LoRA targets for model type "
                         f"'{model_type}'; name them, e.g. {candidates(model)}")
    head = set(head_modules(model))
    linear = [name for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and name not in head]
    if any(name.endswith(".qkv") for name in linear):
        return ["qkv"], "the fused query/key/value projection of each attention block"
    if linear:
        return sorted({name.rsplit(".", 1)[-1] for name in linear}), "the backbone's linear layers"
    arch = getattr(model.config, "architecture", type(timm_model).__name__)
    raise ModelError(
        f"finetune.lora.target_modules: {arch} has no linear layers outside its head (a convolutional network), "
        f"so there is no default; name the convolutions to adapt (peft adapts Conv2d), e.g. {candidates(model)}, "
        "or use finetune.strategy: full"
    )


def adapted_layers(model: nn.Module, targets: list[str]) -> dict[str, tuple[int, int]]:
    """The layers `targets` name (peft's rule: the module's name, or its last dotted parts), with the two
    sizes a rank-r update connects (a Linear's in and out features, a convolution's channels)."""
    head = set(head_modules(model))
    found = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if name in head or weight is None or weight.dim() < 2 or module is model:
            continue
        if any(name == t or name.endswith("." + t) for t in targets):
            found[name] = (int(weight.shape[1]), int(weight.shape[0]))  # (in, out) for Linear and Conv2d
    return found


def check_rank(model: nn.Module, targets: list[str], r: int) -> None:
    """Refuses a rank above the width of the narrowest adapted layer, before peft allocates anything.

    Raises:
        ModelError: naming finetune.lora.r (or target_modules, when they match no layer), the layer, its
            sizes and the largest rank it takes.
    """
    layers = adapted_layers(model, targets)
    if not layers:
        raise ModelError(f"finetune.lora.target_modules: {targets} match no layer of this backbone; layers that "
                         f"can be adapted: {candidates(model)}")
    name, (fan_in, fan_out) = min(layers.items(), key=lambda kv: min(kv[1]))
    if r > min(fan_in, fan_out):
        raise ModelError(
            f"finetune.lora.r: {r:,} is more than the adapted layers allow: {clean_name(name).rsplit('.', 1)[-1]} "
            f"({fan_in} -> {fan_out} features) takes a rank of at most {min(fan_in, fan_out)} (the update B A of "
            "rank r holds r x (in + out) weights; a rank above min(in, out) adds nothing; 4 to 64 is usual)")


def check_recipe_lora(recipe: Any) -> None:
    """check's look at a lora recipe: the targets exist and r fits them, on the backbone built from its config
    on the meta device (no weights read, no memory used).

    Raises:
        ModelError: as `check_rank`, or default_target_modules for an architecture without defaults.
    """
    import torch
    import transformers

    from hf_finetune.tasks import task_of

    spec, task = recipe.finetune.lora, task_of(recipe)
    config = task.inputs.load_config(recipe.model)
    with torch.device("meta"):
        model = getattr(transformers, task.auto_model).from_config(
            config, trust_remote_code=recipe.model.trust_remote_code)
    targets = list(spec.target_modules) if spec.target_modules else default_target_modules(model)[0]
    check_rank(model, targets, spec.r)


def candidates(model: nn.Module, limit: int = 8) -> str:
    """Leaf names of the layers LoRA could adapt, for messages."""
    head = set(head_modules(model))
    names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, _ADAPTED) and n not in head})
    shown = ", ".join(names[:limit]) + (f" (and {len(names) - limit} more)" if len(names) > limit else "")
    return f"[{shown}]" if names else "(no linear or convolution layers found)"


def apply_lora(model: nn.Module, spec: Any, task_type: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Wraps `model` in peft LoRA adapters; returns the peft model and what was resolved (for the record).

    `task_type`: peft's TaskType for the task's head (TOKEN_CLS), or None for a plain PeftModel.

    Raises:
        MissingExtraError: peft is not installed (names the lora extra).
        ModelError: target modules that do not exist in the backbone.
    """
    peft = require("peft", "lora", PURPOSE)
    if spec.target_modules:
        targets, why = list(spec.target_modules), "as the recipe says"
    else:
        targets, why = default_target_modules(model)
    check_rank(model, targets, spec.r)
    save = head_modules(model)
    from hf_finetune.models.pooling import pooling_layer

    pooling = pooling_layer(model)  # the mean-pooling layer is arithmetic: an adapter there would un-mean it
    exclude = rf".*encoder\.layer\.{pooling}\..*" if pooling is not None else None
    config = peft.LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                             modules_to_save=save, bias="none", exclude_modules=exclude,
                             **({"task_type": task_type} if task_type else {}))
    try:
        peft_model = peft.get_peft_model(model, config)
    except ValueError as exc:
        raise ModelError(f"finetune.lora.target_modules: {targets} do not fit this backbone ({exc}); layers that "
                         f"can be adapted: {candidates(model)}") from None
    adapted = sorted({clean_name(n).rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_parameters() if ".lora_A." in n})
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    adapters = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    # Every parameter of the model that trains: backbone, adapters and head (once: not peft's untrained copy).
    total = sum(p.numel() for n, p in peft_model.named_parameters() if ".original_module." not in n)
    record = {
        "r": spec.r, "alpha": spec.alpha, "dropout": spec.dropout, "target_modules": targets,
        "modules_to_save": save, "adapted_layers": len(adapted), "adapter_params": adapters,
        "trainable_params": trainable, "total_params": total, "trainable_share": round(trainable / total, 6),
    }
    logger.info("LoRA: rank %d, alpha %g, dropout %g on %s (%s; %d layers); the new head (%s) trains in full: "
                "%s of %s parameters train (%.2f%%)", spec.r, spec.alpha, spec.dropout, ", ".join(targets), why,
                len(adapted), ", ".join(save), f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return peft_model, record


def resolved_settings(spec: Any, record: dict[str, Any]) -> dict[str, Any]:
    """finetune.lora as the run used it, for the resolved recipe (the default targets filled in)."""
    return {"r": spec.r, "alpha": spec.alpha, "dropout": spec.dropout, "target_modules": record["target_modules"]}


def lora_parts(peft_model: nn.Module) -> ModelParts:
    """The peft model as a head (its trainable copy) and one block (the adapters); the rest is frozen."""
    head, adapters = Block("head"), Block("LoRA adapters")
    frozen = 0
    for name, param in peft_model.named_parameters():
        if not param.requires_grad:
            if ".original_module." not in name:  # peft keeps the untrained head beside its trainable copy
                frozen += param.numel()
        elif "lora_" in name:
            adapters.params.append((name, param))
        else:
            head.params.append((name, param))
    if not head.params:
        raise ModelError("finetune.strategy: lora: the new head is not trainable (peft's modules_to_save did not "
                         "wrap it)")
    return ModelParts(head=head, blocks=[adapters], frozen=frozen)


def check_sharding(trainer: Any) -> None:
    """Merging needs whole weights on one process: refuse the launchers that shard them.

    Raises:
        UserError: under FSDP or DeepSpeed ZeRO-3.
    """
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if trainer.is_fsdp_enabled or (plugin is not None and getattr(plugin, "zero_stage", 0) == 3):
        raise UserError(
            "finetune.strategy: lora is not supported under FSDP or DeepSpeed ZeRO-3 here (the adapters are merged "
            "into whole weights at the end); the trainable share is small, so use DDP "
            "(accelerate_configs/multi_gpu.yaml) or DeepSpeed ZeRO-2"
        )


def save_merged(trainer: Any, tokenizer: Any, folder: Path, save_adapter: bool) -> None:
    """Writes the merged model (and tokenizer) into `folder`, and the adapter into `folder/adapter` when asked.

    The main process only: the other processes' copies are identical under DDP (check_sharding refuses
    the launchers where they are not).
    """
    if not trainer.is_world_process_zero():
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    if save_adapter:
        model.save_pretrained(folder / ADAPTER_DIR)
        (folder / ADAPTER_DIR / "README.md").unlink(missing_ok=True)  # peft's empty card; the run's card is ours
    merged = model.merge_and_unload()
    merged.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def load_adapter_model(run_dir: str | os.PathLike) -> Any:
    """A finished lora run's model as base backbone + its saved adapter (needs `output.save_adapter: true`).

    The base weights come from the run's model.name (the Hub cache or the local folder), the head
    sized to the run's labels; the adapter holds the trained head and the low-rank updates.

    Raises:
        NotAFinishedRunError: no finished run, or no adapter in it.
    """
    from hf_finetune.data.labels import LabelSpace
    from hf_finetune.errors import NotAFinishedRunError
    from hf_finetune.outputs import read_finished_run
    from hf_finetune.recipe import ModelSpec

    peft = require("peft", "lora", "loading a LoRA adapter")
    run = read_finished_run(run_dir)
    adapter = Path(run_dir) / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        raise NotAFinishedRunError(f"OUTPUT_DIR: {run_dir} has no {ADAPTER_DIR}/ (the run did not set "
                                   "output.save_adapter: true)")
    spec = ModelSpec(**run.recipe["model"])
    names = tuple(run.manifest["labels"])
    labels = LabelSpace(names=names, values=names)
    from hf_finetune.tasks import get_task

    base = get_task(run.task).inputs.build_backbone(spec, labels)
    return peft.PeftModel.from_pretrained(base, adapter).eval()
