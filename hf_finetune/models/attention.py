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

logger = logging.getLogger(__name__)

CPU_ATTENTION = "hf_finetune_cpu"


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


def training_attention(config: Any, model_class: Any) -> str | None:
    """The attention kernel to train with when the recipe names none, or None for transformers' choice.

    `CPU_ATTENTION` where it pays: training on CPUs only, a model whose attention goes through
    transformers' attention interface, and attention dropout above zero.
    """
    import torch

    if torch.cuda.is_available() or not getattr(model_class, "_supports_attention_backend", False):
        return None
    dropout = next((getattr(config, name) for name in ("attention_probs_dropout_prob", "attention_dropout")
                    if isinstance(getattr(config, name, None), float)), 0.0)
    if dropout <= 0:
        return None
    logger.info("Attention: the fused kernel, and plain attention while training with dropout on this CPU "
                "(the fused kernel's dropout path is slow on CPUs)")
    return register()
