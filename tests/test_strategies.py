"""Fine-tuning strategies: what trains when, learning rates per block, mixing, weights, early stopping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import TrainerCallback

from hf_finetune.cli import main
from hf_finetune.data.labels import LabelSpace
from hf_finetune.models.backbones import build_text_model, build_tokenizer, build_vision_model
from hf_finetune.models.blocks import split_model
from hf_finetune.recipe import Finetune, ModelSpec
from hf_finetune.training.assembly import resolve_class_weights
from hf_finetune.training.strategies import Schedule, build_plan
from hf_finetune.training.trainer import ClassificationLoss, FinetuneTrainer

from .conftest import write_recipe

LABELS = LabelSpace(names=("neg", "pos"), values=("neg", "pos"))


def text_model(tiny_bert):
    spec = ModelSpec(name=str(tiny_bert))
    return build_text_model(spec, LABELS, build_tokenizer(spec))


def optimizer_for(model, ft: Finetune, lr=1e-3, weight_decay=0.01):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="unused", learning_rate=lr, weight_decay=weight_decay, report_to="none",
                             use_cpu=True)
    plan = build_plan(model, ft, args)
    trainer = FinetuneTrainer(model=model, args=args, loss_fn=ClassificationLoss(), plan=plan)
    return plan, trainer.create_optimizer()


def lr_by_param(optimizer) -> dict[int, tuple[float, float, str]]:
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in out, "a parameter is in two groups"
            out[id(p)] = (group["lr"], group["weight_decay"], group["name"])
    return out


def test_layer_decay_groups_on_a_tiny_bert(tiny_bert):
    model = text_model(tiny_bert)
    ft = Finetune(head_learning_rate=1e-2, backbone_lr_scale=0.5, layer_decay=0.8)
    plan, optimizer = optimizer_for(model, ft)
    groups = lr_by_param(optimizer)
    assert len(groups) == sum(1 for _ in model.parameters())  # every parameter, exactly once
    names = dict(model.named_parameters())
    backbone = 1e-3 * 0.5
    expected = {
        "classifier.weight": 1e-2,
        "bert.pooler.dense.weight": backbone * 0.8,  # the pooler trains with the top layer
        "bert.encoder.layer.1.attention.self.query.weight": backbone * 0.8,
        "bert.encoder.layer.0.output.dense.weight": backbone * 0.8**2,
        "bert.embeddings.word_embeddings.weight": backbone * 0.8**3,
    }
    for name, lr in expected.items():
        assert groups[id(names[name])][0] == pytest.approx(lr), name
    # No weight decay on biases and LayerNorm parameters; decay on weight matrices and embeddings.
    assert groups[id(names["bert.encoder.layer.0.output.LayerNorm.weight"])][1] == 0.0
    assert groups[id(names["bert.encoder.layer.0.output.dense.bias"])][1] == 0.0
    assert groups[id(names["classifier.bias"])][1] == 0.0
    assert groups[id(names["bert.encoder.layer.0.output.dense.weight"])][1] == 0.01
    assert groups[id(names["bert.embeddings.word_embeddings.weight"])][1] == 0.01
    assert [b.name for b in plan.parts.blocks] == ["embeddings", "encoder.layer.0", "encoder.layer.1 + pooler"]


def test_layer_decay_groups_on_a_tiny_timm_model(tiny_resnet, tiny_vit):
    model = build_vision_model(ModelSpec(name=str(tiny_resnet)), LABELS)
    plan, optimizer = optimizer_for(model, Finetune(layer_decay=0.5))
    groups = lr_by_param(optimizer)
    names = dict(model.named_parameters())
    assert groups[id(names["timm_model.fc.weight"])][0] == pytest.approx(1e-3)
    assert groups[id(names["timm_model.layer4.0.conv1.weight"])][0] == pytest.approx(1e-3 * 0.5)
    assert groups[id(names["timm_model.layer1.0.conv1.weight"])][0] == pytest.approx(1e-3 * 0.5**4)
    assert groups[id(names["timm_model.conv1.0.weight"])][0] == pytest.approx(1e-3 * 0.5**5)  # the stem
    assert groups[id(names["timm_model.layer1.0.bn1.weight"])][1] == 0.0  # BatchNorm: no decay
    assert len(plan.parts.blocks) == 5

    vit = build_vision_model(ModelSpec(name=str(tiny_vit)), LABELS)
    _, optimizer = optimizer_for(vit, Finetune(layer_decay=0.9))
    groups = lr_by_param(optimizer)
    names = dict(vit.named_parameters())
    depth = len(split_model(vit).blocks)
    assert groups[id(names["timm_model.pos_embed"])] [:2] == (pytest.approx(1e-3 * 0.9**depth), 0.0)  # exempt
    assert groups[id(names["timm_model.blocks.5.attn.qkv.weight"])][0] == pytest.approx(1e-3 * 0.9)


def test_schedules():
    gradual = Schedule("gradual_unfreeze", num_blocks=3, unfreeze_every=2, blocks_per_unfreeze=1)
    assert [gradual.trainable_blocks(e, 0) for e in (0, 1.5, 2.0, 4.0, 6.0, 9.0)] == [0, 0, 1, 2, 3, 3]
    by_steps = Schedule("gradual_unfreeze", num_blocks=4, unfreeze_every=10, unfreeze_unit="step",
                        blocks_per_unfreeze=2)
    assert [by_steps.trainable_blocks(0, s) for s in (0, 9, 10, 20, 30)] == [0, 0, 2, 4, 4]
    lpft = Schedule("probe_then_full", num_blocks=3, probe_epochs=0.5)
    assert [lpft.trainable_blocks(e, 0) for e in (0, 0.49, 0.5, 2)] == [0, 0, 3, 3]
    assert Schedule("linear_probe", 3).trainable_blocks(5, 100) == 0
    assert Schedule("full", 3).trainable_blocks(0, 0) == 3


class Recorder(TrainerCallback):
    """Snapshots weights at the start and at every epoch end, and requires_grad during each epoch."""

    def __init__(self, model):
        self.model = model
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.requires_grad: list[dict[str, bool]] = []
        self._epoch_seen = -1

    def _snap(self):
        self.snapshots.append({k: v.detach().clone() for k, v in self.model.named_parameters()})

    def on_train_begin(self, args, state, control, **kwargs):
        self._snap()

    def on_step_end(self, args, state, control, **kwargs):
        epoch = int((state.epoch or 0) - 1e-9)
        if epoch != self._epoch_seen:  # first step of an epoch: the phase this epoch trains in
            self._epoch_seen = epoch
            self.requires_grad.append({k: v.requires_grad for k, v in self.model.named_parameters()})

    def on_epoch_end(self, args, state, control, **kwargs):
        self._snap()


@pytest.fixture
def recorded(monkeypatch):
    recorders = []
    original = FinetuneTrainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        recorders.append(Recorder(self.model))
        self.add_callback(recorders[-1])

    monkeypatch.setattr(FinetuneTrainer, "__init__", init)
    return recorders


def run_strategy(tmp_path, text_recipe, finetune: dict, epochs: int) -> dict:
    text_recipe["finetune"] = finetune
    text_recipe["training"].update(num_train_epochs=epochs, weight_decay=0.01, learning_rate=5e-3)
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    assert main(["train", str(path)]) == 0
    return json.loads((tmp_path / "out" / "metrics.json").read_text())


BLOCKS = {"embeddings": "bert.embeddings.", "layer0": "bert.encoder.layer.0.", "layer1": "bert.encoder.layer.1.",
          "pooler": "bert.pooler.", "head": "classifier."}


def changed(before, after) -> set[str]:
    """Which blocks have any parameter that changed (bit-level) between two snapshots."""
    return {block for block, prefix in BLOCKS.items()
            if any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))}


def trainable(flags) -> set[str]:
    return {block for block, prefix in BLOCKS.items() if any(v for k, v in flags.items() if k.startswith(prefix))}


def test_full_trains_everything(tmp_path, text_recipe, recorded):
    run_strategy(tmp_path, text_recipe, {"strategy": "full"}, epochs=1)
    rec = recorded[0]
    assert trainable(rec.requires_grad[0]) == set(BLOCKS)
    assert changed(rec.snapshots[0], rec.snapshots[1]) == set(BLOCKS)


def test_linear_probe_leaves_the_backbone_bit_identical(tmp_path, text_recipe, recorded):
    metrics = run_strategy(tmp_path, text_recipe, {"strategy": "linear_probe"}, epochs=2)
    rec = recorded[0]
    assert all(trainable(flags) == {"head"} for flags in rec.requires_grad)
    assert changed(rec.snapshots[0], rec.snapshots[-1]) == {"head"}
    assert metrics["train"]["phases"][0]["training"] == "head only"
    assert metrics["train"]["phases"][0]["trainable_params"] == 32 * 2 + 2


def test_gradual_unfreeze_goes_top_down_one_block_per_epoch(tmp_path, text_recipe, recorded):
    metrics = run_strategy(tmp_path, text_recipe, {"strategy": "gradual_unfreeze", "unfreeze_every": 1}, epochs=3)
    rec = recorded[0]
    assert [trainable(flags) for flags in rec.requires_grad] == [
        {"head"}, {"head", "layer1", "pooler"}, {"head", "layer1", "pooler", "layer0"}]
    s = rec.snapshots  # start, after epoch 1, 2, 3
    assert changed(s[0], s[1]) == {"head"}
    assert changed(s[1], s[2]) == {"head", "layer1", "pooler"}
    assert changed(s[2], s[3]) == {"head", "layer1", "pooler", "layer0"}
    assert changed(s[0], s[3]) == {"head", "layer1", "pooler", "layer0"}  # embeddings: bit-identical
    phases = metrics["train"]["phases"]
    assert [(p["step"], p["trainable_blocks"]) for p in phases] == [(0, 0), (3, 1), (6, 2)]
    assert phases[0]["trainable_params"] < phases[1]["trainable_params"] < phases[2]["trainable_params"]


def test_probe_then_full(tmp_path, text_recipe, recorded):
    run_strategy(tmp_path, text_recipe, {"strategy": "probe_then_full", "probe_epochs": 1}, epochs=2)
    rec = recorded[0]
    assert [trainable(flags) for flags in rec.requires_grad] == [{"head"}, set(BLOCKS)]
    assert changed(rec.snapshots[0], rec.snapshots[1]) == {"head"}
    assert changed(rec.snapshots[1], rec.snapshots[2]) == set(BLOCKS)


def test_param_groups_are_logged_and_saved(tmp_path, text_recipe, caplog):
    metrics = run_strategy(tmp_path, text_recipe, {"strategy": "full", "layer_decay": 0.5,
                                                   "head_learning_rate": 1e-2}, epochs=1)
    groups = {g["name"]: g for g in metrics["train"]["param_groups"]}
    assert groups["head"]["lr"] == pytest.approx(1e-2)
    assert groups["encoder.layer.0"]["lr"] == pytest.approx(5e-3 * 0.25)
    assert groups["encoder.layer.0 (no decay)"]["weight_decay"] == 0.0
    assert "param group head" in caplog.text and "Phase 0 from step 0" in caplog.text


def test_cached_linear_probe_runs_the_backbone_once_per_sample(tmp_path, text_recipe, monkeypatch):
    from transformers import pipeline
    from transformers.models.bert.modeling_bert import BertModel

    calls = {"rows": 0}
    original = BertModel.forward

    def counting(self, input_ids=None, *args, **kwargs):
        calls["rows"] += input_ids.shape[0]
        return original(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(BertModel, "forward", counting)
    metrics = run_strategy(tmp_path, text_recipe, {"strategy": "linear_probe", "cache_features": True}, epochs=4)
    assert calls["rows"] == 48 + 16 + 16  # once per train, validation and test row; not once per epoch
    monkeypatch.setattr(BertModel, "forward", original)

    out = tmp_path / "out"
    # The saved model carries the trained head; its scores equal those measured on cached features.
    classifier = pipeline("text-classification", model=str(out))
    import csv

    rows = list(csv.DictReader(open(text_recipe["data"]["files"]["validation"])))
    predicted = [a["label"] for a in classifier([r["text"] for r in rows])]
    accuracy = np.mean([p == r["label"] for p, r in zip(predicted, rows, strict=True)])
    assert metrics["validation"]["accuracy"] == pytest.approx(accuracy)


def test_cached_features_need_a_single_linear_head(tmp_path, text_recipe, capsys):
    from hf_finetune.testing import write_tiny_text_model

    from .conftest import FILLER, NEGATIVE, POSITIVE

    text_recipe["model"]["name"] = str(write_tiny_text_model(tmp_path / "distil", POSITIVE + NEGATIVE + FILLER,
                                                             "distilbert"))
    text_recipe["finetune"] = {"strategy": "linear_probe", "cache_features": True}
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    assert main(["train", str(path)]) == 2
    assert "finetune.cache_features: the new head of DistilBertForSequenceClassification is not a single linear " \
           "layer" in capsys.readouterr().err


def test_soft_targets_and_class_weights_in_the_loss():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 2])
    weights = torch.tensor([1.0, 2.0, 3.0])
    logp = torch.log_softmax(logits, dim=-1)
    by_hand = torch.stack([-logp[0, 0] * 1.0, -logp[1, 2] * 3.0])
    torch.testing.assert_close(ClassificationLoss(class_weights=weights)(logits, labels), by_hand)
    unweighted = ClassificationLoss()(logits, labels)
    assert not torch.allclose(unweighted, by_hand)
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]])
    torch.testing.assert_close(ClassificationLoss()(logits, soft), -(soft * logp).sum(-1))
    torch.testing.assert_close(ClassificationLoss(class_weights=weights)(logits, soft),
                               -(soft * logp * weights).sum(-1))
    # one-hot soft targets are the hard-label loss
    torch.testing.assert_close(ClassificationLoss()(logits, torch.nn.functional.one_hot(labels, 3).float()),
                               unweighted)


def test_mixup_and_cutmix_make_soft_targets():
    from timm.data import Mixup

    torch.manual_seed(0)
    np.random.seed(0)
    images, labels = torch.rand(8, 3, 16, 16), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])  # pairs i, 7-i differ
    for mixer in (Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=3),
                  Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=3)):
        mixed, targets = mixer(images.clone(), labels)
        assert targets.shape == (8, 3)
        torch.testing.assert_close(targets.sum(-1), torch.ones(8))
        assert (targets.max(-1).values < 1).all()  # every row mixes two classes (or is smoothed)
        assert not torch.equal(mixed, images)
        loss = ClassificationLoss()(torch.randn(8, 3), targets)
        assert loss.shape == (8,) and torch.isfinite(loss).all()


def test_vision_run_with_mixup_cutmix_and_randaugment(tmp_path, vision_recipe):
    vision_recipe["augmentation"] = {"mixup": 0.8, "cutmix": 1.0, "auto_augment": "randaugment",
                                     "random_erasing": 0.25}
    vision_recipe["training"]["label_smoothing_factor"] = 0.1
    path = write_recipe(tmp_path / "recipe.yaml", vision_recipe)
    assert main(["train", str(path)]) == 0
    resolved = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    assert resolved["training"]["dataloader_drop_last"] is True
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert np.isfinite(metrics["train"]["loss"])


def test_mixup_drops_only_training_batches(tmp_path, vision_recipe):
    # 9 validation and 9 test images, eval batch 64: dropping the last eval batch would score nothing.
    vision_recipe["augmentation"] = {"mixup": 0.2}
    vision_recipe["training"]["per_device_eval_batch_size"] = 64
    path = write_recipe(tmp_path / "recipe.yaml", vision_recipe)
    assert main(["train", str(path)]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert metrics[split]["num_samples"] == 9
        assert sum(map(sum, metrics[split]["confusion_matrix"]["matrix"])) == 9


def test_balanced_class_weights_are_resolved_and_recorded(tmp_path, text_recipe):
    labels = LabelSpace(names=("a", "b", "c"), values=("a", "b", "c"))
    train = {"labels": [0, 0, 0, 0, 1, 1, 2, 0]}
    assert resolve_class_weights("balanced", labels, train) == pytest.approx({"a": 8 / 15, "b": 8 / 6, "c": 8 / 3})
    assert resolve_class_weights({"c": 4}, labels, train) == {"a": 1.0, "b": 1.0, "c": 4.0}
    assert resolve_class_weights([1, 2, 3], labels, train) == {"a": 1.0, "b": 2.0, "c": 3.0}
    from hf_finetune.errors import DataError

    with pytest.raises(DataError, match="'d' is not a label"):
        resolve_class_weights({"d": 2}, labels, train)
    with pytest.raises(DataError, match="gives 2 weights for 3 labels"):
        resolve_class_weights([1, 2], labels, train)

    metrics = run_strategy(tmp_path, text_recipe, {"class_weights": "balanced"}, epochs=1)
    resolved = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    assert resolved["finetune"]["class_weights"] == {"neg": 1.0, "pos": 1.0}  # the fixture is balanced
    assert metrics["train"]["class_weights"] == {"neg": 1.0, "pos": 1.0}


def test_early_stopping_stops_when_the_metric_stalls_and_keeps_the_best(tmp_path, text_recipe, monkeypatch):
    from safetensors.torch import load_file

    from hf_finetune.metrics import ClassificationMetrics

    scripted = iter([0.5, 0.9, 0.6, 0.55, 0.5, 0.5, 0.5, 0.5])
    real_call = ClassificationMetrics.__call__

    def scripted_call(self, eval_pred):
        out = real_call(self, eval_pred)
        out["accuracy"] = next(scripted)
        return out

    monkeypatch.setattr(ClassificationMetrics, "__call__", scripted_call)
    text_recipe["output"]["keep_checkpoints"] = True
    metrics = run_strategy(tmp_path, text_recipe, {"early_stopping_patience": 2}, epochs=8)
    train = metrics["train"]
    assert train["stopped_early"] is True
    assert train["epochs"] == pytest.approx(4.0)  # best at epoch 2, then two evaluations without improvement
    assert train["best_metric"] == pytest.approx(0.9)
    best = Path(train["best_checkpoint"])
    assert best.name == "checkpoint-6"  # 3 steps per epoch
    saved, kept = load_file(tmp_path / "out" / "model.safetensors"), load_file(best / "model.safetensors")
    assert all(torch.equal(saved[k], kept[k]) for k in saved)


def test_strategy_keys_are_checked(tmp_path):
    from hf_finetune.errors import RecipeError
    from hf_finetune.recipe import validate_recipe

    raw = {"task": "text-classification", "model": {"name": "m"}, "data": {"dataset": "d"},
           "finetune": {"strategy": "full", "probe_epochs": 2, "cache_features": True},
           "training": {"eval_strategy": "no", "load_best_model_at_end": False}}
    raw["finetune"]["early_stopping_patience"] = 2
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    problems = {p.path: p.message for p in info.value.problems}
    assert problems["finetune.probe_epochs"] == "only applies to finetune.strategy: probe_then_full"
    assert problems["finetune.cache_features"] == "only applies to finetune.strategy: linear_probe"
    assert "needs evaluations" in problems["finetune.early_stopping_patience"]
