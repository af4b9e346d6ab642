"""finetune.strategy: lora (peft): what trains, the merged output folder, the adapter, recipe errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_finetune.cli import main
from hf_finetune.data.labels import LabelSpace
from hf_finetune.errors import ModelError, RecipeError
from hf_finetune.extras import MissingExtraError
from hf_finetune.models.backbones import build_vision_model
from hf_finetune.recipe import ModelSpec, validate_recipe
from hf_finetune.recipe.schema import LoraSpec
from hf_finetune.training.lora import ADAPTER_DIR, apply_lora, load_adapter_model

from .conftest import write_recipe

# Merged weights W + (alpha / r) B A against the adapter applied on the fly: the same numbers summed
# in another order, float32 rounding only.
MERGE_ATOL = 1e-5
TEXTS = ["the film was good", "awful and boring", "the plot was really quite superb", "dull", "movie"]


def train(tmp_path: Path, recipe: dict, *extra: str) -> Path:
    assert main(["train", str(write_recipe(tmp_path / "recipe.yaml", recipe)), *extra]) == 0
    return Path(recipe["output"]["dir"])


def lora_text_recipe(text_recipe: dict) -> dict:
    text_recipe["finetune"] = {"strategy": "lora", "lora": {"r": 4, "alpha": 8}, "class_weights": "balanced",
                               "early_stopping_patience": 3}
    text_recipe["output"]["save_adapter"] = True
    text_recipe["training"].update(learning_rate=1e-2, num_train_epochs=3)
    return text_recipe


def test_lora_text_run_merges_into_an_ordinary_folder_and_keeps_the_adapter(tmp_path, text_recipe, tiny_bert,
                                                                             caplog):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    caplog.set_level("INFO")
    out = train(tmp_path, lora_text_recipe(text_recipe))
    assert "LoRA: rank 4, alpha 8, dropout 0.1 on query, value" in caplog.text
    assert "parameters train (" in caplog.text  # the trainable share

    metrics = json.loads((out / "metrics.json").read_text())
    lora = metrics["train"]["lora"]
    assert lora["target_modules"] == ["query", "value"] and lora["modules_to_save"] == ["classifier"]
    assert lora["adapted_layers"] == 4  # 2 layers x (query, value)
    head = 32 * 2 + 2
    assert lora["adapter_params"] == 4 * (4 * 32 + 32 * 4)  # A (r x in) and B (out x r) per layer
    assert lora["trainable_params"] == lora["adapter_params"] + head
    assert 0 < lora["trainable_share"] < 0.2
    assert metrics["train"]["phases"][0]["training"] == "head + LoRA adapters"
    assert {g["name"] for g in metrics["train"]["param_groups"]} >= {"LoRA adapters", "head"}
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["finetune"]["lora"]["target_modules"] == ["query", "value"]
    assert resolved["finetune"]["class_weights"] == {"neg": 1.0, "pos": 1.0}
    validate_recipe(resolved)  # the resolved recipe is itself a valid recipe

    # The folder is an ordinary model: merged weights, no peft names; only the adapted matrices moved.
    merged, base = load_file(out / "model.safetensors"), load_file(tiny_bert / "model.safetensors")
    assert not any("lora" in k or "modules_to_save" in k or "base_model" in k for k in merged)
    for layer in (0, 1):
        inner = f"encoder.layer.{layer}.attention.self"
        assert not torch.equal(merged[f"bert.{inner}.query.weight"], base[f"{inner}.query.weight"])
        assert not torch.equal(merged[f"bert.{inner}.value.weight"], base[f"{inner}.value.weight"])
        assert torch.equal(merged[f"bert.{inner}.key.weight"], base[f"{inner}.key.weight"])  # not adapted
    assert torch.equal(merged["bert.embeddings.word_embeddings.weight"], base["embeddings.word_embeddings.weight"])
    assert pipeline("text-classification", model=str(out))(TEXTS[0])[0]["label"] in ("neg", "pos")
    card = (out / "README.md").read_text()
    assert "LoRA (peft): rank-4 adapters (alpha 8, dropout 0.1) on query, value of the frozen backbone" in card

    # The adapter in peft's layout, listed in run.json (so push uploads it), gives the merged logits.
    assert {p.name for p in (out / ADAPTER_DIR).iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    files = json.loads((out / "run.json").read_text())["files"]
    assert f"{ADAPTER_DIR}/adapter_model.safetensors" in files
    tokenizer = AutoTokenizer.from_pretrained(out)
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = AutoModelForSequenceClassification.from_pretrained(out).eval()(**encoded).logits
        adapted = load_adapter_model(out)(**encoded).logits
    torch.testing.assert_close(adapted, plain, atol=MERGE_ATOL, rtol=0)


def test_lora_vit_adapts_qkv_and_trains_the_timm_head(tmp_path, vision_recipe, tiny_vit):
    from transformers import AutoModelForImageClassification, pipeline

    vision_recipe["model"]["name"] = str(tiny_vit)
    vision_recipe["finetune"] = {"strategy": "lora"}
    vision_recipe["output"]["save_adapter"] = True
    vision_recipe["training"]["learning_rate"] = 1e-2
    out = train(tmp_path, vision_recipe)
    lora = json.loads((out / "metrics.json").read_text())["train"]["lora"]
    assert lora["target_modules"] == ["qkv"]
    assert lora["modules_to_save"] == ["timm_model.head"]  # timm_model.<pretrained_cfg['classifier']>
    merged = load_file(out / "model.safetensors")
    assert "head.weight" in merged and not any("lora" in k for k in merged)  # timm's own layout

    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = AutoModelForImageClassification.from_pretrained(out).eval()(pixel_values=pixels).logits
        adapted = load_adapter_model(out)(pixel_values=pixels).logits
    torch.testing.assert_close(adapted, plain, atol=MERGE_ATOL, rtol=0)
    from PIL import Image

    image = Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))
    assert len(pipeline("image-classification", model=str(out))(image)) == 3


def test_convolutional_timm_models_need_named_targets(tiny_resnet):
    labels = LabelSpace(("a", "b"), ("a", "b"))
    with pytest.raises(ModelError, match=r"finetune.lora.target_modules: test_resnet has no linear layers .*conv1"):
        apply_lora(build_vision_model(ModelSpec(name=str(tiny_resnet)), labels), LoraSpec())
    with pytest.raises(ModelError, match="finetune.lora.target_modules: .*nothing_like_this"):
        apply_lora(build_vision_model(ModelSpec(name=str(tiny_resnet)), labels),
                   LoraSpec(target_modules=["nothing_like_this"]))
    # Named convolutions work (peft adapts Conv2d), with the head trained in full.
    model, record = apply_lora(build_vision_model(ModelSpec(name=str(tiny_resnet)), labels),
                               LoraSpec(target_modules=["conv2"]))
    assert record["modules_to_save"] == ["timm_model.fc"] and record["adapted_layers"] > 0
    assert model(pixel_values=torch.randn(2, 3, 32, 32)).logits.shape == (2, 2)


def test_lora_recipe_errors():
    base = {"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"}}
    with pytest.raises(RecipeError) as caught:
        validate_recipe({**base, "model": {"name": "m", "pretrained": False},
                         "finetune": {"strategy": "lora", "layer_decay": 0.8, "unfreeze_every": 2,
                                      "cache_features": True, "probe_epochs": 2, "lora": {"target_modules": []}}})
    text = str(caught.value)
    for expected in ("finetune.layer_decay: has no effect with finetune.strategy: lora",
                     "finetune.unfreeze_every: only applies to finetune.strategy: gradual_unfreeze",
                     "finetune.cache_features: only applies to finetune.strategy: linear_probe",
                     "finetune.probe_epochs: only applies to finetune.strategy: probe_then_full",
                     "finetune.lora.target_modules: give at least one module name",
                     "model.pretrained: false makes no sense with finetune.strategy: lora"):
        assert expected in text
    with pytest.raises(RecipeError) as caught:
        validate_recipe({**base, "finetune": {"lora": {"r": 4}}, "output": {"save_adapter": True}})
    assert "finetune.lora: only applies to finetune.strategy: lora" in str(caught.value)
    assert "output.save_adapter: only applies to finetune.strategy: lora" in str(caught.value)
    with pytest.raises(RecipeError, match="finetune.lora.r"):
        validate_recipe({**base, "finetune": {"strategy": "lora", "lora": {"r": 0}}})
    # Other strategies' resolved recipes carry no LoRA keys.
    assert "lora" not in validate_recipe(base).to_dict()["finetune"]


def test_a_missing_peft_names_the_extra(monkeypatch, tiny_bert):
    from hf_finetune.models.backbones import build_text_model, build_tokenizer

    spec = ModelSpec(name=str(tiny_bert))
    model = build_text_model(spec, LabelSpace(("a", "b"), ("a", "b")), build_tokenizer(spec))
    monkeypatch.setitem(sys.modules, "peft", None)  # what an environment without peft imports
    with pytest.raises(MissingExtraError, match=r'finetune.strategy: lora needs the .peft. package.*hf-finetune\[lora\]'):
        apply_lora(model, LoraSpec())


class Crash(RuntimeError):
    pass


def test_lora_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, text_recipe, monkeypatch):
    from transformers import TrainerCallback

    from hf_finetune.training import trainer as trainer_module

    recipe = lora_text_recipe(text_recipe)
    recipe["finetune"].pop("early_stopping_patience")
    recipe["training"].update(num_train_epochs=1, per_device_train_batch_size=8, eval_strategy="steps",
                              save_strategy="steps", eval_steps=2, save_steps=2)  # 6 steps
    recipe["output"]["dir"] = str(tmp_path / "straight")
    straight = train(tmp_path, recipe)

    class CrashAfterStep5(TrainerCallback):  # the process dies: checkpoint 4 on disk, step 5 lost
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise Crash()

    original_init = trainer_module.FinetuneTrainer.__init__

    def init_with_crash(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(CrashAfterStep5())

    recipe["output"]["dir"] = str(tmp_path / "crashed")
    path = write_recipe(tmp_path / "crashed.yaml", recipe)
    with monkeypatch.context() as patch:
        patch.setattr(trainer_module.FinetuneTrainer, "__init__", init_with_crash)
        with pytest.raises(Crash):
            main(["train", str(path)])
    out = tmp_path / "crashed"
    assert (out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors").is_file()
    assert not (out / "run.json").exists()
    assert main(["train", str(path), "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["train"]["resumed_from"].endswith("checkpoint-4")
    for name in ("model.safetensors", f"{ADAPTER_DIR}/adapter_model.safetensors"):
        expected, got = load_file(straight / name), load_file(out / name)
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            assert torch.equal(got[key], value), f"{name}: {key}"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("HF_FINETUNE_LONG_TESTS"),
                    reason="about 30 s on 2 cores; HF_FINETUNE_LONG_TESTS=1 runs it (test_distributed covers DDP)")
def test_two_process_lora_run_matches_one_process(tmp_path, text_recipe):
    from hf_finetune.testing import write_tiny_bert

    from .conftest import FILLER, NEGATIVE, POSITIVE
    from .test_distributed import compare_one_and_two_processes

    recipe = lora_text_recipe(text_recipe)
    recipe["model"]["name"] = str(write_tiny_bert(tmp_path / "bert-no-dropout", POSITIVE + NEGATIVE + FILLER,
                                                  dropout=0.0))
    recipe["finetune"]["lora"]["dropout"] = 0.0  # the same computation on both sides
    recipe["finetune"].pop("early_stopping_patience")
    recipe["batch"] = {"global_size": 16}
    recipe["training"].update(num_train_epochs=1, per_device_train_batch_size=16)
    m1, m2 = compare_one_and_two_processes(tmp_path, recipe)  # merged weights within float rounding
    assert m1["train"]["lora"]["trainable_params"] == m2["train"]["lora"]["trainable_params"]


@pytest.mark.parametrize("family, targets, head", [
    ("distilbert", ["q_lin", "v_lin"], ["classifier", "pre_classifier"]),
    ("roberta", ["query", "value"], ["classifier.dense", "classifier.out_proj"]),
    ("gpt2", ["c_attn"], ["score"]),
])
def test_default_targets_and_head_per_text_family(tmp_path, family, targets, head):
    from hf_finetune.models.backbones import build_text_model, build_tokenizer
    from hf_finetune.testing import write_tiny_text_model

    from .conftest import FILLER, NEGATIVE, POSITIVE

    spec = ModelSpec(name=str(write_tiny_text_model(tmp_path / family, POSITIVE + NEGATIVE + FILLER, family)))
    tokenizer = build_tokenizer(spec)
    model, record = apply_lora(build_text_model(spec, LabelSpace(("a", "b", "c"), ("a", "b", "c")), tokenizer),
                               LoraSpec())
    assert record["target_modules"] == targets and record["modules_to_save"] == head
    assert record["adapted_layers"] == 2 * len(targets)  # two layers each
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    logits = model(**tokenizer(["good film", "bad"], padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 3)


def test_sharded_launchers_are_refused():
    from types import SimpleNamespace

    from hf_finetune.errors import UserError
    from hf_finetune.training.lora import check_sharding

    def trainer(fsdp=False, zero_stage=None):
        plugin = SimpleNamespace(zero_stage=zero_stage) if zero_stage else None
        return SimpleNamespace(is_fsdp_enabled=fsdp, accelerator=SimpleNamespace(state=SimpleNamespace(
            deepspeed_plugin=plugin)))

    for refused in (trainer(fsdp=True), trainer(zero_stage=3)):
        with pytest.raises(UserError, match="not supported under FSDP or DeepSpeed ZeRO-3.*DDP"):
            check_sharding(refused)
    check_sharding(trainer())
    check_sharding(trainer(zero_stage=2))  # ZeRO-2 keeps whole weights on every process


def test_lora_rank_is_bounded_by_the_adapted_layers_width_in_check(tmp_path, text_recipe, capsys):
    """r = 1e8 used to reach peft, which allocated 25 GB for A and B; check names it from the config alone."""
    text_recipe["finetune"] = {"strategy": "lora"}
    path = write_recipe(tmp_path / "r.yaml", text_recipe)
    assert main(["check", str(path), "--schema-only", "finetune.lora.r=100000000"]) == 2  # past any layer's width
    assert "finetune.lora.r: input should be less than or equal to 65536" in capsys.readouterr().err
    for r in (65_536, 33):
        for command in ("check", "train"):
            assert main([command, str(path), f"finetune.lora.r={r}"]) == 2
            err = capsys.readouterr().err
            assert f"error: finetune.lora.r: {r:,} is more than the adapted layers allow" in err, err
            assert "query (32 -> 32 features)" in err and "at most 32" in err and "Traceback" not in err
    assert main(["check", str(path), "finetune.lora.r=32", "finetune.lora.target_modules=[dense]"]) == 0
    capsys.readouterr()
    assert main(["check", str(path), "finetune.lora.target_modules=[nothing_like_this]"]) == 2
    assert "finetune.lora.target_modules: " in capsys.readouterr().err


def test_lora_rank_bound_in_apply_lora_before_peft_allocates(tiny_resnet):
    labels = LabelSpace(("a", "b"), ("a", "b"))
    model = build_vision_model(ModelSpec(name=str(tiny_resnet)), labels)
    with pytest.raises(ModelError, match=r"finetune.lora.r: 65,536 is more than the adapted layers allow: conv2"):
        apply_lora(model, LoraSpec(r=65_536, target_modules=["conv2"]))


@pytest.mark.parametrize("lora, key", [({"alpha": float("inf")}, "finetune.lora.alpha"),
                                       ({"alpha": float("nan")}, "finetune.lora.alpha"),
                                       ({"alpha": 1e300}, "finetune.lora.alpha"),
                                       ({"dropout": 1.0}, "finetune.lora.dropout"),
                                       ({"r": 10**12}, "finetune.lora.r")])
def test_lora_settings_are_bounded_by_the_recipe_check(lora, key):
    base = {"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"}}
    with pytest.raises(RecipeError) as caught:
        validate_recipe({**base, "finetune": {"strategy": "lora", "lora": lora}})
    assert [p.path for p in caught.value.problems] == [key]
