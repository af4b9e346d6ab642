"""A model seen as a new head on top of a stack of pretrained blocks.

    head       the parameters created for this task (the classifier), trained from scratch
    blocks     the pretrained backbone, bottom (embeddings / stem) to top (last layer, pooler)

Freezing, gradual unfreezing and layer-wise learning rates all work on this one structure, for
BERT-family encoders (embeddings, then encoder layers) and timm models (timm's own grouping:
stem, then stages or blocks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

# Prefixes added by wrappers (DDP, FSDP, torch.compile) in front of the model's own parameter names.
_WRAPPER_PREFIX = re.compile(r"^(?:(?:module|_fsdp_wrapped_module|_orig_mod|_checkpoint_wrapped_module)\.)+")
# Numbered layers inside a transformers base model: encoder.layer.3, transformer.layer.3, h.3, layers.3
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)(?:embeddings|wte|wpe|embed_tokens|embed_positions)\.")


def clean_name(name: str) -> str:
    """A parameter name without the wrapper prefixes that DDP/FSDP/compile put in front of it."""
    return _WRAPPER_PREFIX.sub("", name)


@dataclass
class Block:
    name: str  # e.g. "embeddings", "encoder.layer.3", "timm group 2 (layer2.0)"
    params: list[tuple[str, nn.Parameter]] = field(default_factory=list)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for _, p in self.params)


@dataclass
class ModelParts:
    head: Block
    blocks: list[Block]  # bottom to top
    frozen: int = 0  # parameters in neither, which never train (the base model under LoRA adapters)

    def all_blocks(self) -> list[Block]:
        """Bottom to top, head last."""
        return [*self.blocks, self.head]

    def depth_of(self, index: int) -> int:
        """Depth below the head of block `index` (the top block is 1, the bottom one len(blocks))."""
        return len(self.blocks) - index


def split_model(model: nn.Module) -> ModelParts:
    """Splits a sequence- or image-classification model into its new head and pretrained blocks."""
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None:
        return _split_timm(model, timm_model)
    if hasattr(model, "decode_head") and hasattr(model, "backbone"):  # UperNet: a new decoder on a backbone
        return _split_encoder_decoder(model)
    return _split_transformers(model)


def _split_encoder_decoder(model: nn.Module) -> ModelParts:
    """A segmentation model: the decoder (and any auxiliary head) is the new head; the backbone's blocks are
    its top-level modules in order, a numbered stage each (blocks.3, layer2, stages.1)."""
    head = Block("decoder")
    blocks: dict[str, Block] = {}
    for name, param in model.named_parameters():
        clean = clean_name(name)
        if not clean.startswith("backbone."):
            head.params.append((name, param))
            continue
        inner = clean.removeprefix("backbone.").removeprefix("_backbone.").split(".")
        key = ".".join(inner[:2]) if inner[0] in ("blocks", "stages", "layers") and len(inner) > 2 else inner[0]
        blocks.setdefault(key, Block(key)).params.append((name, param))
    return ModelParts(head=head, blocks=list(blocks.values()))


def _split_transformers(model: nn.Module) -> ModelParts:
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not hasattr(model, prefix):
        raise ValueError(f"{type(model).__name__} has no base model to split into blocks")
    from hf_finetune.models.pooling import pooling_layer

    head = Block("head")
    embeddings = Block("embeddings")
    layers: dict[int, Block] = {}
    top = Block("top")  # pooler, final norms: after the last layer
    top_modules: set[str] = set()
    pooling = pooling_layer(model)  # the mean-pooling layer (models/pooling.py) is fixed arithmetic: never trains
    frozen = 0
    for name, param in model.named_parameters():
        clean = clean_name(name)
        if not clean.startswith(prefix + "."):
            head.params.append((name, param))
            continue
        inner = clean[len(prefix) + 1:]
        match = _LAYER.search(inner)
        if match and pooling is not None and int(match.group(1)) == pooling and inner.startswith("encoder."):
            frozen += param.numel()
            continue
        if match:
            index = int(match.group(1))
            layers.setdefault(index, Block(inner[: match.end() - 1])).params.append((name, param))
        elif _EMBEDDINGS.search("." + inner):
            embeddings.params.append((name, param))
        else:
            top.params.append((name, param))
            top_modules.add(inner.split(".")[0])
    blocks = [embeddings] + [layers[i] for i in sorted(layers)]
    if top.params:
        if len(blocks) > 1:
            last = blocks[-1]
            last.params.extend(top.params)  # the pooler trains with the layer it reads
            last.name += " + " + ", ".join(sorted(top_modules))
        else:
            blocks.append(top)
    return ModelParts(head=head, blocks=[b for b in blocks if b.params], frozen=frozen)


def _split_timm(model: nn.Module, timm_model: nn.Module) -> ModelParts:
    from timm.models import group_parameters

    classifier = timm_model.get_classifier()
    head_ids = {id(p) for p in classifier.parameters()} if isinstance(classifier, nn.Module) else set()
    by_name = dict(model.named_parameters())
    # Map timm's own names ("layer1.0.conv1.weight") to the wrapper's ("timm_model.layer1.0.conv1.weight").
    wrapper_name = {clean_name(n).removeprefix("timm_model."): n for n in by_name}
    groups = group_parameters(timm_model, timm_model.group_matcher(coarse=False))
    head, blocks = Block("head"), []
    for index in sorted(groups):
        block = Block(_group_name(groups[index]))
        for inner in groups[index]:
            name = wrapper_name[inner]
            param = by_name[name]
            (head if id(param) in head_ids else block).params.append((name, param))
        if block.params:
            blocks.append(block)
    if not head.params:
        raise ValueError(f"cannot find the classifier of timm model {type(timm_model).__name__}")
    return ModelParts(head=head, blocks=blocks)


def _group_name(names: list[str]) -> str:
    """`layer2.1` for a group of `layer2.1.*` parameters; the top-level modules when they differ."""
    parts = [n.split(".")[:-1] for n in names]
    common = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    if common:
        return ".".join(common)
    return "+".join(sorted({n.split(".")[0] for n in names}))


def no_weight_decay(name: str, param: torch.Tensor, skip: set[str]) -> bool:
    """Biases, normalization scales/shifts (1-D) and the model's own exemptions get no weight decay."""
    clean = clean_name(name).removeprefix("timm_model.")
    return param.ndim <= 1 or clean.endswith(".bias") or clean in skip
