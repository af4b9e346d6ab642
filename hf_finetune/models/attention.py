"""An attention kernel choice for training on CPUs: PyTorch's fused attention, except where it is slow.

On CPUs, `torch.nn.functional.scaled_dot_product_attention` with `dropout_p > 0` leaves the fused
kernel for the reference "math" path: 15x slower than without dropout at BERT's shapes (8 x 12
heads x 256 tokens: 77 ms against 5 ms, measured on this project's 2-core machines). Encoders
such as BERT keep attention dropout (0.1) during fine-tuning, so every training step pays it,
while evaluation (no dropout) does not. Plain matmul-softmax-dropout attention ("eager") avoids
the slow path but is 2x slower than the fused kernel at evaluation.

`CPU_ATTENTION` is registered with transformers' attention and mask interfaces: it runs the eager
computation while training with attention dropout on a CPU, and the fused kernel everywhere else.
The maths is the same as either kernel; only the speed changes (a MiniLM training step: 1.6x
faster in bf16; benchmarks/quality.py --tasks speed). It is never written into a saved model:
the run saves "sdpa", which any transformers install loads.
"""

from __future__ import annotations

import logging
from typing import Any

from hf_finetune.errors import ModelError

logger = logging.getLogger(__name__)

CPU_ATTENTION = "hf_finetune_cpu"
# Where text configs keep their attention-weight dropout: BERT, RoBERTa, ELECTRA, DeBERTa, ALBERT, XLM-R
# and MiniLM the first; DistilBERT, ModernBERT and BART-style models the second; GPT-2 the third.
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")
# Fine-tuning turns attention dropout off unless the recipe sets `model.attention_dropout`. Why: on a CPU
# the dropout alone is 14% of a MiniLM training step (8 x 128 tokens: 0.533 s with BERT's 0.1, 0.454 s
# without: the fused kernel serves training too, and no mask of batch x heads x tokens^2 is drawn per
# layer; whole runs: full BBC 10% and imbalanced BBC 4% faster steps), and on six real text sets F1 and
# Pearson moved by -0.010..+0.009 without it, inside the seeds' spread (benchmarks/README.md, "Attention
# dropout off while fine-tuning"). One value on every device: a GPU run trains the model a CPU run does.
FINE_TUNING_ATTENTION_DROPOUT = 0.0


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
               dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None,
               **kwargs: Any) -> tuple[Any, Any]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    fused = (dropout == 0.0 or query.device.type != "cpu" or (attention_mask is None and causal)
             or key.shape[1] != query.shape[1] or kwargs.get("position_bias") is not None)
    if fused:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # the fused kernel's mask: True where attention is allowed
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=True)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


def register() -> str:
    """Registers `CPU_ATTENTION` with transformers (idempotent) and returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(CPU_ATTENTION, _attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(CPU_ATTENTION, sdpa_mask)
    return CPU_ATTENTION


def attention_dropout_key(config: Any) -> str | None:
    """The config attribute that holds the attention-weight dropout, or None where the model has none."""
    return next((name for name in ATTENTION_DROPOUT_KEYS if isinstance(getattr(config, name, None), (float, int))
                 and not isinstance(getattr(config, name), bool)), None)


def set_attention_dropout(config: Any, value: float | None, model_name: str) -> float | None:
    """Writes the fine-tuning attention dropout into `config` and returns it (None: the model has none).

    Args:
        value: `model.attention_dropout` (None: `FINE_TUNING_ATTENTION_DROPOUT`).
    """
    key = attention_dropout_key(config)
    if key is None:
        # 0 (a resolved recipe records it) asks for what such a model already does; a rate it cannot apply
        if value:
            kind = f"a {config.model_type} model" if getattr(config, "model_type", "") else "its config"
            raise ModelError(f"model.attention_dropout: {model_name} ({kind}) keeps no attention dropout under "
                             f"{', '.join(ATTENTION_DROPOUT_KEYS)}, so {value:g} cannot be applied; set it to null")
        return None
    chosen = FINE_TUNING_ATTENTION_DROPOUT if value is None else float(value)
    if chosen != getattr(config, key):
        logger.info("Attention dropout %g (the backbone's config says %g)%s", chosen, getattr(config, key),
                    "" if value is not None else ": off while fine-tuning by default, faster on CPUs; "
                    "model.attention_dropout sets it")
    setattr(config, key, chosen)
    return chosen


def trained_attention(model: Any) -> dict[str, Any]:
    """The `model` keys of attention as the model trained, for the resolved recipe: its kernel (the one
    saved: never CPU_ATTENTION) and its attention dropout, each where the model has one."""
    kernel = getattr(model.config, "_attn_implementation", None)
    key = attention_dropout_key(model.config)
    return ({"attn_implementation": kernel} if kernel in ("sdpa", "eager", "flash_attention_2") else {}) | (
        {"attention_dropout": float(getattr(model.config, key))} if key else {})


def training_attention(config: Any, model_class: Any) -> str | None:
    """The attention kernel to train with when the recipe names none, or None for transformers' choice.

    `CPU_ATTENTION` where it pays: training on CPUs only, a model whose attention goes through
    transformers' attention interface, and attention dropout above zero.
    """
    import torch

    if torch.cuda.is_available() or not getattr(model_class, "_supports_attention_backend", False):
        return None
    key = attention_dropout_key(config)
    dropout = getattr(config, key) if key else 0.0
    if dropout <= 0:
        return None
    logger.info("Attention: the fused kernel, and plain attention while training with dropout on this CPU "
                "(the fused kernel's dropout path is slow on CPUs)")
    return register()
