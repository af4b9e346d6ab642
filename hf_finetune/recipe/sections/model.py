"""`model`: the pretrained backbone (its checks against the task are cross-section: recipe/cross.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hf_finetune.recipe.sections.base import Section


class ModelSpec(Section):
    name: str = Field(
        description="Backbone: a Hub id (bert-base-uncased, timm/resnet50.a1_in1k, hf-hub:timm/...), "
        "a timm architecture name (resnet50) or a local folder."
    )
    revision: str | None = Field(None, description="Hub branch, tag or commit of the backbone.")
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped in the model's Hub repository (off unless you trust it)."
    )
    pretrained: bool = Field(
        True, description="Load pretrained weights; false builds the architecture with random weights."
    )
    allow_pickle: bool = Field(
        False,
        description="Allow pickle-based weights (pytorch_model.bin); pickle can run code, so safetensors only by default.",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="Attention kernel of text models (default: the fastest available, sdpa; recorded)."
    )
    attention_dropout: float | None = Field(
        None, ge=0, lt=1,
        description="Dropout on the attention weights of text models while fine-tuning (default 0 for backbones "
        "that keep it as attention_probs_dropout_prob, attention_dropout or attn_pdrop, whatever their config "
        "says: faster on CPUs, F1 within the seeds' spread on the real sets measured; benchmarks/README.md). "
        "0.1 keeps BERT's own.",
    )
    hidden_dropout: float | None = Field(
        None, ge=0, lt=1,
        description="Dropout on the hidden states of text models while fine-tuning: the embeddings, every "
        "layer's outputs and the head's input (hidden_dropout_prob, dropout or resid_pdrop, with the head's own "
        "rate where the config keeps one). Default: 0 from 500 training rows (finetune.data_aware), else the "
        "backbone's config (BERT: 0.1). Recorded.",
    )
    channels_last: bool | None = Field(
        None, description="Channels-last memory layout for convolutional vision models (default: on with a GPU)."
    )
    pooling: Literal["auto", "cls", "mean"] = Field(
        "auto",
        description="What the text classifier reads: cls (the model's own head, on [CLS]) or mean (the mean of "
        "the token states, as a frozen BERT layer that pipeline() loads); auto: mean where the backbone's "
        "sentence-transformers config says it was trained that way (all-MiniLM-L6-v2), else cls.",
    )
