"""Build the pretrained backbone with a new classification head sized to the label space.

Text: any `AutoModelForSequenceClassification` backbone, from the Hub or a local folder.
Vision: timm models wrapped as `TimmWrapperForImageClassification`, so that the saved folder loads
with `transformers.pipeline` and with `timm.create_model("local-dir:...")`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hf_finetune import hub
from hf_finetune.data.labels import LabelSpace
from hf_finetune.errors import HubUnreachableError, ModelError
from hf_finetune.models.attention import set_attention_dropout, training_attention
from hf_finetune.models.hidden_dropout import set_hidden_dropout
from hf_finetune.recipe import ModelSpec

logger = logging.getLogger(__name__)
T = TypeVar("T")

DOWNLOAD_HINT = (
    "Where you are online, download it (`hf download {name} --local-dir models/{short}`) "
    "and set model.name: models/{short}."
)


def _hub_kwargs(spec: ModelSpec, name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    if not hub.is_local_path(name) and hub.unreachable_reason() is not None:
        kwargs["local_files_only"] = True  # resolve from the cache instead of retrying the network
    return kwargs


def _load(spec: ModelSpec, name: str, what: str, load: Callable[[], T]) -> T:
    """Runs a `from_pretrained` call and turns its failures into errors that name `model.name`."""
    try:
        return load()
    except HubUnreachableError:
        raise
    except (OSError, ValueError) as exc:
        text = str(exc)
        if "trust_remote_code" in text:
            raise ModelError(
                f"model.name: {name} ships its own Python code, which runs only with "
                "model.trust_remote_code: true; read that code before you allow it"
            ) from None
        if hub.is_local_path(name):
            if "safetensors" in text or "pytorch_model.bin" in text:
                raise ModelError(
                    f"model.name: {name} has no safetensors weights; pickle-based weights can run code "
                    "when loaded, so they are refused unless model.allow_pickle: true"
                ) from None
            raise ModelError(f"model.name: cannot load the {what} from {name}: {text.splitlines()[0]}") from None
        if hub.unreachable_reason() is not None:
            short = name.split("/")[-1]
            raise hub.unreachable_error(
                "model.name", name, what, DOWNLOAD_HINT.format(name=name, short=short)
            ) from None
        raise ModelError(f"model.name: cannot load the {what} of '{name}' from the Hub: {text}") from None


def warn_remote_code(spec: ModelSpec) -> None:
    if spec.trust_remote_code:
        logger.warning(
            "model.trust_remote_code is true: Python code from '%s' will run on this machine", spec.name
        )


def _check_name(spec: ModelSpec) -> str:
    name = spec.name
    if hub.looks_like_path(name) and not hub.is_local_path(name):
        raise ModelError(f"model.name: local folder not found: {name}")
    return name


# --- text ------------------------------------------------------------------------------------------

def build_tokenizer(spec: ModelSpec) -> Any:
    """The backbone's tokenizer; decoder-only models (GPT-2 style) get their EOS token as padding."""
    from transformers import AutoTokenizer

    name = _check_name(spec)
    warn_remote_code(spec)
    tokenizer = _load(spec, name, "tokenizer", lambda: AutoTokenizer.from_pretrained(name, **_hub_kwargs(spec, name)))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"model.name: the tokenizer of {name} has neither a pad nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("Tokenizer has no pad token: padding with its EOS token '%s'", tokenizer.eos_token)
    return tokenizer


def load_text_config(spec: ModelSpec, labels: LabelSpace | None = None) -> Any:
    from transformers import AutoConfig

    name = _check_name(spec)
    kwargs = _hub_kwargs(spec, name)
    if labels is not None:
        kwargs.update(num_labels=labels.num_labels, id2label=labels.id2label, label2id=labels.label2id)
    return _load(spec, name, "model config", lambda: AutoConfig.from_pretrained(name, **kwargs))


def _sequence_classification_class(config: Any) -> Any:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    try:
        return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    except KeyError:  # remote code or an architecture without a head class: transformers decides
        return None


def build_text_model(spec: ModelSpec, labels: LabelSpace, tokenizer: Any) -> Any:
    """A sequence-classification model with a new head of `labels.num_labels` outputs."""
    from transformers import AutoModelForSequenceClassification

    name = _check_name(spec)
    config = load_text_config(spec, labels)
    config.problem_type = labels.problem_type
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    set_attention_dropout(config, spec.attention_dropout, name)
    set_hidden_dropout(config, spec.hidden_dropout, name)
    chosen = spec.attn_implementation or training_attention(config, _sequence_classification_class(config))
    attention = {"attn_implementation": chosen} if chosen else {}
    if not spec.pretrained:
        logger.warning("model.pretrained is false: %s starts from random weights", name)
        model = AutoModelForSequenceClassification.from_config(
            config, trust_remote_code=spec.trust_remote_code, **attention)
        return _with_pooling(model, spec, name)
    kwargs = _hub_kwargs(spec, name) | attention
    model = _load(
        spec,
        name,
        "model weights",
        lambda: AutoModelForSequenceClassification.from_pretrained(
            name,
            config=config,
            ignore_mismatched_sizes=True,  # an existing head of another size is replaced
            use_safetensors=None if spec.allow_pickle else True,
            **kwargs,
        ),
    )
    return _with_pooling(model, spec, name)


def build_token_model(spec: ModelSpec, labels: LabelSpace, tokenizer: Any) -> Any:
    """A token-classification model: a new head of `labels.num_labels` outputs on every token's state."""
    from transformers import AutoModelForTokenClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING

    name = _check_name(spec)
    config = load_text_config(spec, labels)
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    set_attention_dropout(config, spec.attention_dropout, name)
    set_hidden_dropout(config, spec.hidden_dropout, name)
    head_class = MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING.get(type(config), None)
    if head_class is None and not spec.trust_remote_code:
        raise ModelError(f"model.name: {name} is a {config.model_type} model, which transformers has no "
                         "token-classification head for")
    chosen = spec.attn_implementation or training_attention(config, head_class)
    attention = {"attn_implementation": chosen} if chosen else {}
    if not spec.pretrained:
        logger.warning("model.pretrained is false: %s starts from random weights", name)
        return AutoModelForTokenClassification.from_config(config, trust_remote_code=spec.trust_remote_code,
                                                           **attention)
    kwargs = _hub_kwargs(spec, name) | attention
    return _load(spec, name, "model weights", lambda: AutoModelForTokenClassification.from_pretrained(
        name, config=config, ignore_mismatched_sizes=True, use_safetensors=None if spec.allow_pickle else True,
        **kwargs))


def _with_pooling(model: Any, spec: ModelSpec, name: str) -> Any:
    """The model with the pooling `model.pooling` resolves to (models/pooling.py); a pooling layer it
    already carries (a model fine-tuned here) stays frozen."""
    from hf_finetune.models.fast_pooling import use_fast_pooling
    from hf_finetune.models.pooling import add_mean_pooling, freeze, pooling_layer, resolve_pooling

    existing = pooling_layer(model)
    if existing is not None:
        freeze(model.base_model.encoder.layer[existing])
        use_fast_pooling(model.base_model.encoder.layer[existing])
        logger.info("Pooling: mean of the token states (layer %d of %s, kept frozen)", existing, name)
        return model
    mode, why = resolve_pooling(spec.pooling, name, model.config, spec.revision)
    if mode == "mean":
        index = add_mean_pooling(model)
        use_fast_pooling(model.base_model.encoder.layer[index])  # a seventh layer's cost on MiniLM, saved
        logger.info("Pooling: mean of the token states, as a frozen layer %d (%s)", index, why)
    else:
        logger.info("Pooling: the model's own head on [CLS] (%s)", why)
    return model


# --- vision ----------------------------------------------------------------------------------------

def _timm_arch(name: str) -> str | None:
    import timm

    return name if timm.is_model(name) else None


def _suggest_timm(name: str) -> str:
    import timm

    from hf_finetune.errors import closest

    match = closest(name, timm.list_models())
    return f"; did you mean '{match}'?" if match else ""


def _label_kwargs(labels: LabelSpace) -> dict[str, Any]:
    return {"num_labels": labels.num_labels, "id2label": labels.id2label, "label2id": labels.label2id}


def load_vision_config(spec: ModelSpec, labels: LabelSpace | None = None) -> Any:
    """The backbone's `TimmWrapperConfig` (architecture + pretrained data config), without weights."""
    from transformers import TimmWrapperConfig

    name, arch = resolve_vision_name(spec)
    label_kwargs = _label_kwargs(labels) if labels is not None else {}
    if arch is not None and not spec.pretrained:
        import timm.models

        pretrained_cfg = timm.models.get_pretrained_cfg(arch)
        return TimmWrapperConfig(
            architecture=arch.split(".")[0],
            pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg is not None else None,
            **label_kwargs,
        )
    if hub.is_local_path(name):
        cfg_file = Path(name) / "config.json"
        if not cfg_file.is_file():
            raise ModelError(f"model.name: {name} has no config.json (expected timm's Hub layout)")
        if "architecture" not in json.loads(cfg_file.read_text()):
            raise ModelError(
                f"model.name: {cfg_file} does not describe a timm model (no 'architecture' key); "
                "image-classification backbones are timm models"
            )
    kwargs = _hub_kwargs(spec, name)
    kwargs.pop("trust_remote_code")
    config = _load(
        spec, name, "model config",
        lambda: TimmWrapperConfig.from_pretrained(name, **label_kwargs, **kwargs),
    )
    # timm stores num_classes in model_args too; the wrapper passes num_classes itself, and two values
    # for the same keyword fail ("got multiple values for keyword argument 'num_classes'").
    if config.model_args:
        config.model_args = {k: v for k, v in config.model_args.items() if k != "num_classes"}
    return config


def resolve_vision_name(spec: ModelSpec) -> tuple[str, str | None]:
    """Returns (name to load, timm architecture or None) for a vision `model.name`.

    Accepts a local folder, a Hub id (`timm/resnet50.a1_in1k`, with or without `hf-hub:`), or a timm
    architecture name (`resnet50`, `resnet50.a1_in1k`), whose pretrained weights live on the Hub.
    """
    name = spec.name.removeprefix("hf-hub:")
    if hub.is_local_path(name):
        return name, None
    if hub.looks_like_path(name):
        raise ModelError(f"model.name: local folder not found: {spec.name}")
    arch = _timm_arch(name)
    if arch is not None:
        if not spec.pretrained:
            return name, arch
        import timm.models

        cfg = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not hub_id:
            raise ModelError(f"model.name: timm has no pretrained weights on the Hub for '{name}'")
        return hub_id, arch
    if "/" in name:
        return name, None
    raise ModelError(
        f"model.name: '{spec.name}' is not a local folder, a timm architecture or a Hub id (owner/name)"
        + _suggest_timm(name)
    )


def build_vision_model(spec: ModelSpec, labels: LabelSpace) -> Any:
    """A timm backbone with a new `labels.num_labels`-way head, as `TimmWrapperForImageClassification`."""
    from transformers import TimmWrapperForImageClassification

    config = load_vision_config(spec, labels)
    config.problem_type = labels.problem_type
    if not spec.pretrained:
        logger.warning("model.pretrained is false: %s starts from random weights", spec.name)
        model = TimmWrapperForImageClassification(config)
    else:
        model = _load_vision_weights(spec, config)
    if not getattr(model.config, "pretrained_cfg", None):
        # Keep the data config with the saved model, so pipeline() preprocesses as training did.
        model.config.pretrained_cfg = dict(model.timm_model.pretrained_cfg)
    return model


def _load_vision_weights(spec: ModelSpec, config: Any) -> Any:
    from transformers import TimmWrapperForImageClassification

    name, _ = resolve_vision_name(spec)
    kwargs = _hub_kwargs(spec, name)
    kwargs.pop("trust_remote_code")
    return _load(
        spec,
        name,
        "model weights",
        lambda: TimmWrapperForImageClassification.from_pretrained(
            name,
            config=config,
            ignore_mismatched_sizes=True,  # the pretrained head (e.g. 1000 ImageNet classes) is replaced
            use_safetensors=None if spec.allow_pickle else True,
            **kwargs,
        ),
    )


def vision_data_config(config: Any) -> dict[str, Any]:
    """Input size, mean, std, interpolation and crop from the checkpoint's own pretrained config.

    Resolved exactly as `TimmWrapperImageProcessor` does, so evaluation here and `pipeline()` on the
    saved model see identically preprocessed images.
    """
    import timm.models
    from transformers import TimmWrapperImageProcessor

    pretrained_cfg = getattr(config, "pretrained_cfg", None)
    if not pretrained_cfg:
        default = timm.models.get_pretrained_cfg(config.architecture)
        if default is None:
            raise ModelError(f"model.name: no pretrained data config (input size, mean, std) for {config.architecture}")
        pretrained_cfg = default.to_dict()
        config.pretrained_cfg = pretrained_cfg  # saved with the model, so pipeline() preprocesses the same way
    return dict(TimmWrapperImageProcessor(pretrained_cfg=dict(pretrained_cfg)).data_config)


def is_convolutional(model: Any) -> bool:
    """True for CNN backbones (ResNet, EfficientNet, ConvNeXt), not for ViTs with one patch conv."""
    import torch

    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) >= 3
