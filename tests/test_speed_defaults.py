"""Machine defaults that make CPU training faster without changing its maths: the attention kernel
choice (models/attention.py), bf16 on CPUs with AMX, and full-precision final figures."""

import json

import pytest
import torch
import yaml

from hf_finetune.models import attention
from hf_finetune.training import arguments
from hf_finetune.training.trainer import full_precision


def _qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, 6, 8, generator=g) for _ in range(3)]


class _Module(torch.nn.Module):
    is_causal = False


def _eager(q, k, v, mask, p):
    scores = q @ k.transpose(2, 3) * q.size(-1) ** -0.5 + mask
    return (torch.nn.functional.dropout(scores.softmax(-1), p=p, training=True) @ v).transpose(1, 2)


def test_cpu_attention_is_eager_attention_while_training_with_dropout():
    q, k, v = _qkv()
    allowed = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    allowed[1, :, :, 4:] = False  # the second row's last two tokens are padding
    additive = torch.zeros(2, 1, 6, 6).masked_fill(~allowed, torch.finfo(torch.float32).min)
    torch.manual_seed(3)
    ours, _ = attention._attention(_Module(), q, k, v, allowed, dropout=0.25)
    torch.manual_seed(3)
    torch.testing.assert_close(ours, _eager(q, k, v, additive, 0.25), rtol=0, atol=1e-6)
    # Without dropout it is the fused kernel, with the same result as eager attention.
    fused, _ = attention._attention(_Module(), q, k, v, allowed, dropout=0.0)
    torch.testing.assert_close(fused, _eager(q, k, v, additive, 0.0), rtol=1e-5, atol=1e-5)


def test_cpu_attention_is_chosen_only_where_it_pays(monkeypatch):
    from transformers import BertConfig, BertForSequenceClassification

    with_dropout, without = BertConfig(), BertConfig(attention_probs_dropout_prob=0.0)
    assert attention.training_attention(with_dropout, BertForSequenceClassification) == attention.CPU_ATTENTION
    assert attention.training_attention(without, BertForSequenceClassification) is None
    assert attention.training_attention(with_dropout, None) is None  # unknown class: transformers decides
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert attention.training_attention(with_dropout, BertForSequenceClassification) is None


def test_a_run_saves_a_model_any_transformers_loads(text_run):
    from transformers import AutoModelForSequenceClassification

    config = json.loads((text_run / "config.json").read_text())
    assert attention.CPU_ATTENTION not in json.dumps(config)
    model = AutoModelForSequenceClassification.from_pretrained(text_run)
    assert model.config._attn_implementation == "sdpa"


def test_a_run_fine_tunes_without_attention_dropout_and_records_it(text_run, tiny_bert):
    backbone = json.loads((tiny_bert / "config.json").read_text())
    assert backbone["attention_probs_dropout_prob"] == 0.1  # the backbone's own value...
    assert json.loads((text_run / "config.json").read_text())["attention_probs_dropout_prob"] == 0.0  # ...not used
    assert yaml.safe_load((text_run / "recipe.yaml").read_text())["model"]["attention_dropout"] == 0.0


def test_the_recipes_attention_dropout_is_the_models_and_picks_the_kernel(monkeypatch):
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, GPT2Config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the kernel choice is the CPU's

    config = BertConfig()
    assert attention.set_attention_dropout(config, None, "bert") == 0.0 == config.attention_probs_dropout_prob
    assert attention.training_attention(config, BertForSequenceClassification) is None  # the fused kernel
    assert attention.set_attention_dropout(config, 0.1, "bert") == 0.1 == config.attention_probs_dropout_prob
    assert attention.training_attention(config, BertForSequenceClassification) == attention.CPU_ATTENTION
    distil, gpt2 = DistilBertConfig(), GPT2Config()
    attention.set_attention_dropout(distil, 0.2, "distil")
    attention.set_attention_dropout(gpt2, None, "gpt2")
    assert (distil.attention_dropout, gpt2.attn_pdrop) == (0.2, 0.0)


def test_attention_dropout_on_a_model_without_one_is_a_clear_error():
    from transformers import PretrainedConfig

    from hf_finetune.errors import ModelError

    config = PretrainedConfig()
    assert attention.set_attention_dropout(config, None, "odd") is None  # the default leaves it alone
    assert attention.set_attention_dropout(config, 0.0, "odd") is None  # a resolved recipe's 0: already true
    with pytest.raises(ModelError, match=r"model.attention_dropout: odd \(its config\) keeps no attention dropout "
                                         r"under attention_probs_dropout_prob, attention_dropout, attn_pdrop, so 0.1 "
                                         r"cannot be applied; set it to null"):
        attention.set_attention_dropout(config, 0.1, "odd")


def test_members_that_differ_only_in_attention_dropout_share_an_architecture():
    from hf_finetune.combine.members import NOT_ARCHITECTURE

    assert set(attention.ATTENTION_DROPOUT_KEYS) <= NOT_ARCHITECTURE


@pytest.mark.parametrize("amx", [True, False])
def test_bf16_is_the_cpu_default_for_text_only_where_the_cpu_has_amx(monkeypatch, amx):
    monkeypatch.setattr(arguments, "cpu_has_bf16_matmul", lambda: amx)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert arguments.device_defaults("text-classification").get("bf16", False) is amx
    assert "bf16" not in arguments.device_defaults("image-classification")


def test_full_precision_undoes_accelerates_autocast_for_the_final_figures():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    model = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    reference = model(x)
    AcceleratorState._reset_state(reset_partial_state=True)  # an earlier run left its own state behind
    try:
        prepared = Accelerator(cpu=True, mixed_precision="bf16").prepare_model(model)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    mixed = prepared(x)
    assert not torch.allclose(mixed, reference, atol=1e-6)  # bf16 matmul rounds
    with full_precision(prepared):
        torch.testing.assert_close(prepared(x), reference)
    torch.testing.assert_close(prepared(x), mixed)  # and mixed precision again after
    with full_precision(torch.nn.Linear(2, 2)):  # a model accelerate never wrapped: nothing to undo
        pass
