"""Mean pooling for BERT classifiers, written in BERT's own layers so that `pipeline()` loads the model.

Sentence encoders (all-MiniLM-L6-v2, the sentence-transformers family) are trained to be read by the
mean of their token states; their [CLS] state and pooler were never trained for that, so a
classifier on [CLS] starts from a poor feature (on BBC News a probe on [CLS] reaches macro-F1 0.59,
on the mean 0.80: benchmarks/README.md). transformers' BertForSequenceClassification can only read
[CLS]. Rather than ship a custom class (which would need `trust_remote_code` to load), one more
BertLayer is appended to the encoder whose weights compute the masked mean exactly where [CLS] is:

    attention   query = key = 0, so every token attends uniformly to all unmasked tokens;
                value = identity, so the attention output is the mean of the token states
                (over the attention mask, [CLS] and [SEP] included, as sentence-transformers does)
    output      dense = SCALE * identity, then the residual adds the token's own state and the
                LayerNorm normalises: LayerNorm(SCALE * mean + h) = LayerNorm(mean) up to h / SCALE
    feed-forward all zeros, so its residual LayerNorm leaves the normalised mean as it is

The pooler is reset to the identity, so the classifier reads tanh(LayerNorm(mean)). The layer is
frozen (never in a training block), the saved config names it (`hf_finetune_pooling`), and the
model is an ordinary BertForSequenceClassification with one more layer: pipeline(), ONNX export and
every tool that reads BERT read it unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from hf_finetune.errors import ModelError

logger = logging.getLogger(__name__)

CONFIG_KEY = "hf_finetune_pooling"  # in config.json: {"mode": "mean", "layer": index of the pooling layer}
# Large enough that the residual (the token's own state) hardly moves the result (on MiniLM the pooled
# state has cosine 0.99999 with LayerNorm(mean), at most 0.075 off in any feature of unit scale),
# small enough for float16: the weight and SCALE x the mean stay far below its 65,504 limit, so the
# model also runs under fp16 autocast and when loaded with torch_dtype=float16 (1e6 gave NaN there).
# Training and inference compute the same layer, so the small difference from the exact mean is
# what the classifier is trained on.
SCALE = 1e3
SUPPORTED = ("bert",)


def sentence_transformers_pooling(folder: str | Path) -> tuple[str, bool] | None:
    """(pooling mode, normalize) from a sentence-transformers folder, or None for another model.

    Raises:
        ModelError: when the folder's Pooling module asks for no mode or several.
    """
    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    pooling = next((m for m in modules if m.get("type", "").endswith("models.Pooling")), None)
    if pooling is None:
        return None
    config_file = folder / pooling.get("path", "1_Pooling") / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    modes = [mode for mode, key in (("mean", "pooling_mode_mean_tokens"), ("cls", "pooling_mode_cls_token"),
                                    ("max", "pooling_mode_max_tokens")) if config.get(key)]
    if len(modes) != 1:
        raise ModelError(f"model.name: {config_file} asks for pooling {modes or 'none'}; exactly one of mean, "
                         "cls or max is read")
    normalize = any(m.get("type", "").endswith("models.Normalize") for m in modules)
    return modes[0], normalize


def hub_sentence_transformers_folder(name: str, revision: str | None = None) -> Path | None:
    """A local folder with a Hub model's modules.json and pooling config (downloaded, or from the
    cache when the Hub is unreachable), or None when the model has none or they cannot be read."""
    from huggingface_hub import hf_hub_download

    from hf_finetune import hub

    offline = hub.unreachable_reason() is not None
    try:
        modules_file = Path(hf_hub_download(name, "modules.json", revision=revision, local_files_only=offline))
        modules = json.loads(modules_file.read_text())
        pooling = next((m for m in modules if m.get("type", "").endswith("models.Pooling")), None)
        if pooling is not None:
            hf_hub_download(name, f"{pooling.get('path', '1_Pooling')}/config.json", revision=revision,
                            local_files_only=offline)
    except Exception as exc:  # no such file, no network, no cache: the model's own head is used, said so
        logger.debug("No sentence-transformers config for %s: %s", name, exc)
        return None
    return modules_file.parent


def resolve_pooling(asked: str, name: str, config: Any, revision: str | None = None) -> tuple[str, str]:
    """('mean' or 'cls', why) for `model.pooling` (auto reads the backbone's own sentence-transformers
    config, from its folder or, for a Hub id, from the Hub or its cache).

    Raises:
        ModelError: `mean` asked of an architecture this layer cannot be written for.
    """
    model_type = getattr(config, "model_type", "?")
    if asked == "cls":
        return "cls", "as the recipe says"
    if asked == "mean":
        if model_type not in SUPPORTED:
            raise ModelError(f"model.pooling: mean is written as a BERT layer and works for model types "
                             f"{', '.join(SUPPORTED)}; {name} is '{model_type}' (set model.pooling: cls)")
        return "mean", "as the recipe says"
    if getattr(config, CONFIG_KEY, None):  # a model fine-tuned here already carries its pooling layer
        return "cls", "the backbone already ends in a mean-pooling layer"
    folder = Path(name)
    if not folder.is_dir():
        found_folder = hub_sentence_transformers_folder(name, revision)
        if found_folder is None:
            return "cls", ("the backbone has no sentence-transformers config on the Hub or in its cache: "
                           "its own head reads [CLS]")
        folder = found_folder
    try:
        found = sentence_transformers_pooling(folder)
    except ModelError as exc:
        return "cls", f"{exc}; the model's own head reads [CLS]"
    if found is None:
        return "cls", "the backbone has no sentence-transformers pooling config: its own head reads [CLS]"
    mode = found[0]
    if mode != "mean":
        return "cls", f"the backbone was trained with {mode} pooling; the model's own head reads [CLS]"
    if model_type not in SUPPORTED:
        return "cls", (f"the backbone was trained with mean pooling, but the pooling layer is written for "
                       f"{', '.join(SUPPORTED)} and this is '{model_type}': its own head reads [CLS]")
    return "mean", ("the backbone was trained to be read by the mean of its token states (its sentence-"
                    "transformers pooling config); its [CLS] pooler was not")


def add_mean_pooling(model: Any) -> int:
    """Appends the mean-pooling layer to a BertForSequenceClassification; returns its layer index."""
    from transformers.models.bert.modeling_bert import BertLayer

    encoder = model.base_model.encoder
    index = len(encoder.layer)
    layer = BertLayer(model.config, layer_idx=index) if _takes_layer_idx() else BertLayer(model.config)
    hidden = model.config.hidden_size
    eye = torch.eye(hidden)
    with torch.no_grad():
        for param in layer.parameters():
            param.zero_()
        layer.attention.self.value.weight.copy_(eye)
        layer.attention.output.dense.weight.copy_(eye * SCALE)
        layer.attention.output.LayerNorm.weight.fill_(1.0)
        layer.output.LayerNorm.weight.fill_(1.0)
        pooler = model.base_model.pooler
        if pooler is not None:
            pooler.dense.weight.copy_(eye)
            pooler.dense.bias.zero_()
    layer.to(dtype=next(encoder.parameters()).dtype)
    layer.train(model.training)
    freeze(layer)
    encoder.layer.append(layer)
    model.config.num_hidden_layers = index + 1
    setattr(model.config, CONFIG_KEY, {"mode": "mean", "layer": index})
    return index


def freeze(layer: torch.nn.Module) -> None:
    """The pooling layer is arithmetic, not a learned layer: no gradients, and no dropout while training
    (a dropped token or feature would make the mean a random one)."""
    for param in layer.parameters():
        param.requires_grad_(False)
    for module in layer.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _takes_layer_idx() -> bool:
    import inspect

    from transformers.models.bert.modeling_bert import BertLayer

    return "layer_idx" in inspect.signature(BertLayer.__init__).parameters


def pooling_layer(model: Any) -> int | None:
    """Index of the model's mean-pooling layer, or None."""
    config = getattr(model, "config", None)
    record = getattr(config, CONFIG_KEY, None) if config is not None else None
    return int(record["layer"]) if isinstance(record, dict) and "layer" in record else None
