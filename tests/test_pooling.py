"""The mean-pooling layer: exact masked mean where [CLS] is, frozen, and loadable by pipeline()."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hf_finetune.errors import ModelError
from hf_finetune.models.pooling import CONFIG_KEY, add_mean_pooling, pooling_layer, resolve_pooling
from hf_finetune.testing import write_sentence_transformers_config


@pytest.fixture(scope="module")
def st_bert(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT as a sentence-transformers folder trained with mean pooling."""
    folder = tmp_path_factory.mktemp("st") / "st-bert"
    shutil.copytree(tiny_bert, folder)
    return write_sentence_transformers_config(folder, "mean")


def _classifier(folder: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def test_cls_state_is_the_layer_normed_masked_mean(tiny_bert):
    model, tokenizer = _classifier(tiny_bert)
    batch = tokenizer(["great film", "a dull and boring film with a bad end"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # the first row is padded
    with torch.no_grad():
        states = model.bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (states * mask).sum(1) / mask.sum(1)
        expected = torch.nn.functional.layer_norm(mean, (mean.shape[-1],), eps=model.config.layer_norm_eps)
        index = add_mean_pooling(model)
        pooled = model.bert(**batch).last_hidden_state[:, 0]
        single = model(**tokenizer(["great film"], return_tensors="pt")).logits
        padded = model(**batch).logits[:1]
    assert index == 2 and model.config.num_hidden_layers == 3 and pooling_layer(model) == 2
    cosine = torch.nn.functional.cosine_similarity(pooled, expected, dim=-1)
    assert torch.all(cosine > 0.9999) and (pooled - expected).abs().max() < 0.05, cosine  # the residual is 1/1000
    assert torch.allclose(single, padded, atol=1e-5)  # padding does not change the mean
    states = model.bert(**batch).last_hidden_state
    assert torch.allclose(model.bert.pooler(states), torch.tanh(states[:, 0]), atol=1e-6)  # the pooler: identity
    assert not any(p.requires_grad for p in model.bert.encoder.layer[index].parameters())
    with torch.no_grad():  # float16 (GPU autocast without bf16, or loading with torch_dtype=float16) stays finite
        half = model.half().bert(**batch).last_hidden_state[:, 0].float()
    assert torch.isfinite(half).all() and torch.allclose(half, pooled, atol=0.05)


def test_resolve_pooling_reads_the_backbone(tiny_bert, st_bert, tmp_path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_bert)
    assert resolve_pooling("auto", str(st_bert), config)[0] == "mean"
    mode, why = resolve_pooling("auto", str(tiny_bert), config)
    assert mode == "cls" and "no sentence-transformers pooling config" in why
    cls_folder = write_sentence_transformers_config(shutil.copytree(tiny_bert, tmp_path / "cls"), "cls")
    mode, why = resolve_pooling("auto", str(cls_folder), config)
    assert mode == "cls" and "trained with cls pooling" in why
    assert resolve_pooling("mean", str(tiny_bert), config)[0] == "mean"
    assert resolve_pooling("cls", str(st_bert), config)[0] == "cls"
    config.model_type = "distilbert"
    with pytest.raises(ModelError, match="model.pooling: mean .* 'distilbert'"):
        resolve_pooling("mean", str(tiny_bert), config)
    mode, why = resolve_pooling("auto", str(st_bert), config)
    assert mode == "cls" and "'distilbert'" in why


def test_a_hub_id_is_read_from_the_hub_or_its_cache(tiny_bert, st_bert, monkeypatch):
    import huggingface_hub
    from transformers import AutoConfig

    asked = []

    def download(repo_id, filename, revision=None, local_files_only=False):
        asked.append((repo_id, filename, revision))
        if repo_id != "someone/st-model":
            raise huggingface_hub.errors.EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(st_bert / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    config = AutoConfig.from_pretrained(tiny_bert)
    assert resolve_pooling("auto", "someone/st-model", config, "v1")[0] == "mean"
    assert asked == [("someone/st-model", "modules.json", "v1"), ("someone/st-model", "1_Pooling/config.json", "v1")]
    mode, why = resolve_pooling("auto", "someone/plain-bert", config)
    assert mode == "cls" and "on the Hub or in its cache" in why


def test_model_pooling_is_text_only(vision_recipe):
    from hf_finetune.errors import RecipeError
    from hf_finetune.recipe import validate_recipe

    with pytest.raises(RecipeError, match="model.pooling"):
        validate_recipe({**vision_recipe, "model": {**vision_recipe["model"], "pooling": "mean"}})


def test_trained_mean_pooled_model_loads_in_pipeline_and_the_layer_never_trains(text_recipe, st_bert, tmp_path):
    from safetensors.torch import load_file
    from transformers import pipeline

    from hf_finetune import train

    # full fine-tuning (few labels on a sentence encoder would otherwise default to a probe)
    recipe = {**text_recipe, "model": {"name": str(st_bert)}, "finetune": {"strategy": "full"}}
    result = train(recipe)
    out = result.output_dir
    config = json.loads((out / "config.json").read_text())
    assert config[CONFIG_KEY] == {"mode": "mean", "layer": 2} and config["num_hidden_layers"] == 3
    weights = load_file(out / "model.safetensors")
    hidden = config["hidden_size"]
    assert torch.equal(weights["bert.encoder.layer.2.attention.self.value.weight"], torch.eye(hidden))
    assert torch.count_nonzero(weights["bert.encoder.layer.2.attention.self.query.weight"]) == 0
    assert torch.count_nonzero(weights["bert.encoder.layer.2.intermediate.dense.weight"]) == 0
    assert not torch.equal(weights["bert.pooler.dense.weight"], torch.eye(hidden))  # the pooler trains
    classify = pipeline("text-classification", model=str(out), device="cpu")
    assert classify("a great film")[0]["label"] in {"neg", "pos"}
    import yaml

    assert yaml.safe_load((out / "recipe.yaml").read_text())["model"]["pooling"] == "mean"  # auto, resolved
    assert "mean of the token states" in (out / "README.md").read_text()

    # fine-tuned again from its own folder: the layer is kept (not added twice) and stays frozen
    again = train({**recipe, "model": {"name": str(out)}, "output": {"dir": str(tmp_path / "again")}})
    config = json.loads((again.output_dir / "config.json").read_text())
    assert config["num_hidden_layers"] == 3
    assert torch.equal(load_file(again.output_dir / "model.safetensors")["bert.encoder.layer.2.attention.self.value.weight"],
                       torch.eye(hidden))


def test_lora_leaves_the_pooling_layer_without_adapters(tiny_bert):
    pytest.importorskip("peft")
    from hf_finetune.recipe.schema import LoraSpec
    from hf_finetune.training.lora import apply_lora

    model, _ = _classifier(tiny_bert)
    index = add_mean_pooling(model)
    peft_model, record = apply_lora(model, LoraSpec())
    adapted = {n for n, _ in peft_model.named_parameters() if "lora_A" in n}
    assert adapted and all(f"encoder.layer.{index}." not in n for n in adapted)
    assert any("encoder.layer.0." in n for n in adapted)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_the_arithmetic_pooling_layer_matches_the_full_layer_in_outputs_and_gradients(tiny_bert, attention):
    import copy
    import pickle

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_finetune.models.fast_pooling import FastMeanPooling, use_fast_pooling

    torch.manual_seed(0)
    slow = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3, attn_implementation=attention)
    index = add_mean_pooling(slow)
    fast = copy.deepcopy(slow)
    assert use_fast_pooling(fast.bert.encoder.layer[index]) and type(fast.bert.encoder.layer[index]) is FastMeanPooling
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    batch = tokenizer(["great film", "a dull and boring film with a bad end"], padding=True, return_tensors="pt")
    labels = torch.tensor([0, 2])
    for model in (slow, fast):  # train mode: the encoder's dropout is on, the pooling layer's is off
        model.train()
        torch.manual_seed(1)
        model(**batch, labels=labels).loss.backward()
    fast.eval(), slow.eval()
    with torch.no_grad():
        assert torch.allclose(fast(**batch).logits, slow(**batch).logits, atol=1e-5)
        no_padding = tokenizer(["a dull and boring film"], return_tensors="pt")  # sdpa: no mask at all
        assert torch.allclose(fast(**no_padding).logits, slow(**no_padding).logits, atol=1e-5)
    for (name, a), b in zip(slow.named_parameters(), fast.parameters(), strict=True):
        if a.grad is not None:  # the same seed, the same dropout draws: the same gradients
            assert torch.allclose(a.grad, b.grad, atol=1e-5), name
    assert sum(p.grad is not None for p in fast.parameters()) > 10
    # The saved weights are the plain BertLayer's; copies and pickles keep the fast layer.
    assert fast.state_dict().keys() == slow.state_dict().keys()
    assert type(pickle.loads(pickle.dumps(fast)).bert.encoder.layer[index]) is FastMeanPooling


def test_a_layer_that_is_not_plain_mean_pooling_keeps_its_own_forward(tiny_bert):
    from transformers import AutoModelForSequenceClassification
    from transformers.models.bert.modeling_bert import BertLayer

    from hf_finetune.models.fast_pooling import use_fast_pooling

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    assert not use_fast_pooling(model.bert.encoder.layer[0])  # a trained layer: attention is not uniform
    index = add_mean_pooling(model)
    with torch.no_grad():
        model.bert.encoder.layer[index].attention.output.LayerNorm.bias.fill_(0.5)  # still reproduced exactly
    assert use_fast_pooling(model.bert.encoder.layer[index])
    other = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    index = add_mean_pooling(other)
    other.bert.encoder.layer[index].attention.self.dropout.p = 0.1  # a dropped token would make the mean random
    assert not use_fast_pooling(other.bert.encoder.layer[index]) and type(other.bert.encoder.layer[index]) is BertLayer
