"""The dropout of a text backbone's hidden states while fine-tuning: `model.hidden_dropout`.

BERT-family configs keep one rate for the embeddings, every layer's outputs and (where the config
leaves `classifier_dropout` unset) the head's input: 0.1 in BERT, MiniLM, RoBERTa. Other families name
it otherwise and keep the head's own rate beside it. The recipe key sets all of them at once; null
keeps what the backbone's config says, except that with `finetune.data_aware` a run of at least
500 labelled training rows trains without it (training/data_aware.hidden_dropout_decision).
"""

from __future__ import annotations

import logging
from typing import Any

from hf_finetune.errors import ModelError

logger = logging.getLogger(__name__)

# Where text configs keep the hidden-state dropout: BERT, RoBERTa, ELECTRA, DeBERTa, ALBERT, XLM-R and
# MiniLM the first; DistilBERT and BART-style models the second; GPT-2 the third.
HIDDEN_DROPOUT_KEYS = ("hidden_dropout_prob", "dropout", "resid_pdrop")
# Rates beside it that the same key sets where the config has them as numbers: the head's input (BERT's
# classifier_dropout when set, DistilBERT's seq_classif_dropout, GPT-2's summary_first_dropout) and
# GPT-2's embeddings. BERT's classifier_dropout of None already follows hidden_dropout_prob.
COMPANION_KEYS = ("classifier_dropout", "seq_classif_dropout", "summary_first_dropout", "embd_pdrop")


def _rate(config: Any, name: str) -> float | None:
    value = getattr(config, name, None)
    return float(value) if isinstance(value, (float, int)) and not isinstance(value, bool) else None


def hidden_dropout_key(config: Any) -> str | None:
    """The config attribute that holds the hidden-state dropout, or None where the model has none."""
    return next((name for name in HIDDEN_DROPOUT_KEYS if _rate(config, name) is not None), None)


def set_hidden_dropout(config: Any, value: float | None, model_name: str) -> float | None:
    """Writes the fine-tuning hidden dropout `value` (`model.hidden_dropout`) into `config` and returns it
    (None: left as the config says)."""
    chosen = None if value is None else float(value)
    key = hidden_dropout_key(config)
    if key is None:
        if value:  # 0 asks for what such a model already does
            kind = f"a {config.model_type} model" if getattr(config, "model_type", "") else "its config"
            raise ModelError(f"model.hidden_dropout: {model_name} ({kind}) keeps no hidden-state dropout under "
                             f"{', '.join(HIDDEN_DROPOUT_KEYS)}, so {value:g} cannot be applied; set it to null")
        return None
    if chosen is None:
        return None
    names = [key] + [name for name in COMPANION_KEYS if _rate(config, name) is not None]
    before = {name: _rate(config, name) for name in names}
    if any(rate != chosen for rate in before.values()):
        logger.info("Hidden dropout %g (the backbone's config says %s)", chosen,
                    ", ".join(f"{name} {rate:g}" for name, rate in before.items()))
    for name in names:
        setattr(config, name, chosen)
    return chosen


def trained_hidden_dropout(model: Any) -> dict[str, Any]:
    """`model.hidden_dropout` as the model trained, for the resolved recipe: where the model has one rate for
    the hidden states and the head (DistilBERT's own 0.1 and 0.2 are two: the key would set both to one, so
    it is left null, which reproduces them)."""
    key = hidden_dropout_key(model.config)
    if key is None:
        return {}
    rates = {_rate(model.config, name) for name in (key, *COMPANION_KEYS)} - {None}
    return {"hidden_dropout": rates.pop()} if len(rates) == 1 else {}
