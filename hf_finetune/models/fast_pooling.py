"""The mean-pooling layer computed as the arithmetic it is, not as a full BERT layer (issue #31).

The pooling layer (models/pooling.py) is an ordinary BertLayer so that every tool loads the saved
model, but as a BertLayer it costs what any encoder layer costs: query, key and value projections,
attention over every pair of tokens and a 4x feed-forward, all multiplying zeros and identities, on
every token, forward and backward. On all-MiniLM-L6-v2 that is a seventh encoder layer: a seventh of
each training step spent computing a mean.

With its query and key weights zero the attention is uniform over the unmasked tokens, so the
attention output is value(mean of the token states) (value is affine); with its intermediate weights
zero the feed-forward adds the constant output.dense(act(intermediate.bias)). The layer is therefore

    out_i = LN_out(c + LN_attn(dense(value(mean)) + h_i))

computed here with the layer's own modules on one vector per row plus two LayerNorms per token. The
weights stay where they are (saving, LoRA, ONNX export see the same parameters, and the saved model
is a plain BERT); only the layer's forward changes, and only after it reproduced the layer's own
output on a padded probe batch.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers.models.bert.modeling_bert import BertLayer

logger = logging.getLogger(__name__)

PROBE_TOLERANCE = 1e-4  # max |difference| on the probe batch (the two differ by float rounding only)


class FastMeanPooling(BertLayer):
    """The pooling layer with the arithmetic forward: same weights, same output, a fraction of the cost.
    (A subclass rather than a patched method, so that copies and pickles of the model keep it.)"""

    returns_tuple = False  # what this transformers' BertLayer.forward returns, set by use_fast_pooling

    def forward(self, hidden_states: torch.Tensor, attention_mask: Any = None, *args: Any, **kwargs: Any) -> Any:
        out = pooled_states(self, hidden_states, attention_mask)
        return (out,) if self.returns_tuple else out


def use_fast_pooling(layer: Any) -> bool:
    """Gives the pooling layer the arithmetic forward when it reproduces the layer's own output on a
    padded probe batch; returns whether it did (other weights keep the full layer's forward)."""
    if type(layer) is FastMeanPooling:
        return True
    if type(layer) is not BertLayer or not _is_pooling_arithmetic(layer):
        logger.info("Pooling layer: its weights are not plain mean pooling; it runs as a full BERT layer")
        return False
    probe, mask = _probe_inputs(layer)
    additive = _additive(mask, probe.dtype)
    with torch.no_grad():
        expected = layer(probe, additive)
        returns_tuple = isinstance(expected, tuple)
        expected = expected[0] if returns_tuple else expected
        got = pooled_states(layer, probe, additive)
    # Only the unmasked positions count: the pooled vector is read at [CLS], never at padding.
    gap = float((got - expected)[mask.bool()].abs().max())
    if gap > PROBE_TOLERANCE:
        logger.info("Pooling layer: the arithmetic form differs from the layer by %.2g on a probe; it runs "
                    "as a full BERT layer", gap)
        return False
    layer.__class__ = FastMeanPooling
    layer.returns_tuple = returns_tuple
    return True


def pooled_states(layer: Any, hidden: torch.Tensor, attention_mask: Any) -> torch.Tensor:
    """The pooling layer's output for `hidden` (batch, tokens, features) under the encoder's mask."""
    keep = _kept_tokens(attention_mask, hidden)  # (batch, tokens), 1.0 where a token is attended to
    mean = (hidden * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
    attention = layer.attention
    context = attention.output.dense(attention.self.value(mean))  # (batch, features)
    mixed = attention.output.LayerNorm(context.unsqueeze(1) + hidden)
    intermediate = layer.intermediate
    bias = intermediate.dense.bias if intermediate.dense.bias is not None else hidden.new_zeros(
        intermediate.dense.out_features)
    constant = layer.output.dense(intermediate.intermediate_act_fn(bias.to(hidden.dtype)))
    return layer.output.LayerNorm(mixed + constant)


def _kept_tokens(attention_mask: Any, hidden: torch.Tensor) -> torch.Tensor:
    """1.0 for the keys every query attends to, from the mask the encoder hands its layers: None (no
    padding), boolean (True = attend) or additive (0 = attend, the dtype's minimum = masked), as
    (batch, keys) or (batch, 1, queries, keys)."""
    batch, tokens = hidden.shape[:2]
    if attention_mask is None:
        return hidden.new_ones(batch, tokens)
    mask = attention_mask
    while mask.dim() > 2:
        mask = mask[:, 0]  # one head, the first query: a bidirectional mask is the same for every query
    if mask.dtype == torch.bool:
        return mask.to(hidden.dtype)
    return (mask > torch.finfo(mask.dtype).min / 2).to(hidden.dtype)


def _is_pooling_arithmetic(layer: Any) -> bool:
    try:
        self_attention, intermediate = layer.attention.self, layer.intermediate
        zero = [self_attention.query.weight, self_attention.key.weight, intermediate.dense.weight]
        dropouts = [m.p for m in layer.modules() if isinstance(m, torch.nn.Dropout)]
        dropouts.append(getattr(self_attention, "dropout_prob", 0.0) or 0.0)
    except AttributeError:
        return False
    return (all(bool((w == 0).all()) for w in zero) and all(p == 0 for p in dropouts)
            and not getattr(layer, "is_decoder", False))


def _probe_inputs(layer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    weight = layer.attention.self.value.weight
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(2, 5, weight.shape[1], generator=generator).to(weight.device, weight.dtype)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], device=weight.device)
    return probe, mask


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The (batch, 1, 1, keys) additive mask BERT's eager attention takes."""
    return ((1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min).to(dtype)
