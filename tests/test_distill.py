"""Distillation (`distill:`): the loss pinned, alpha = 1 is plain training, the teacher stays untouched."""

from __future__ import annotations

import copy
import hashlib
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import hf_finetune
from hf_finetune.errors import DataError, RecipeError
from hf_finetune.training.distill import Distiller, TeacherMember, kl_per_sample

from .conftest import FILLER, NEGATIVE, POSITIVE

QUICK = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "save_strategy": "no", "eval_strategy": "no",
         "load_best_model_at_end": False, "logging_steps": 1}


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def _student(text_recipe: dict, out: Path, **distill) -> dict:
    recipe = copy.deepcopy(text_recipe)
    recipe["training"] = {**recipe["training"], **QUICK}
    recipe["output"] = {"dir": str(out)}
    if distill:
        recipe["distill"] = distill
    return recipe


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_kl_term_is_temperature_squared_kl():
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    t = 3.0
    expected = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True,
                        reduction="none").sum(-1) * t * t
    assert torch.allclose(kl_per_sample(student, teacher, t), expected, atol=1e-6)
    assert torch.allclose(kl_per_sample(teacher, teacher, t), torch.zeros(5), atol=1e-6)
    # log-probabilities are logits: an ensemble's log(mean probs) gives the same softened teacher
    assert torch.allclose(kl_per_sample(student, torch.log_softmax(teacher, -1), t), expected, atol=1e-5)
    blended = Distiller([], t, 0.25, None).blend(torch.ones(5), student, {}, teacher)
    assert torch.allclose(blended, 0.25 + 0.75 * expected, atol=1e-6)


def test_alpha_one_is_plain_training(text_recipe, text_run, tmp_path):
    teacher_before = _digest(text_run)
    plain = hf_finetune.train(_student(text_recipe, tmp_path / "plain")).output_dir
    same = hf_finetune.train(_student(text_recipe, tmp_path / "alpha1", teacher=str(text_run), alpha=1.0)).output_dir
    a, b = _weights(plain), _weights(same)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _digest(text_run) == teacher_before


def test_distilling_from_an_ensemble_with_another_tokenizer(text_recipe, text_run, tmp_path):
    from hf_finetune.combine.ensemble import build_ensemble
    from hf_finetune.testing import write_tiny_bert

    build_ensemble(tmp_path / "ens", [text_run, shutil.copytree(text_run, tmp_path / "twin")])
    teacher_before = _digest(tmp_path / "ens" / "members" / f"00-{text_run.name}")
    # a student with its own, different vocabulary (ids mean other words than in the teacher's tokenizer)
    student = write_tiny_bert(tmp_path / "student-bert", list(reversed(POSITIVE + NEGATIVE + FILLER)) + ["extra"],
                              hidden_size=16, seed=3)
    base = {**text_recipe, "model": {"name": str(student)}}
    plain = hf_finetune.train(_student(base, tmp_path / "plain")).output_dir
    result = hf_finetune.train(_student(base, tmp_path / "distilled", teacher=str(tmp_path / "ens"), alpha=0.5,
                                        temperature=2.0))
    a, b = _weights(plain), _weights(result.output_dir)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the teacher's term moved the student
    assert _digest(tmp_path / "ens" / "members" / f"00-{text_run.name}") == teacher_before
    recipe = (result.output_dir / "recipe.yaml").read_text()
    assert "teacher: " + str(tmp_path / "ens") in recipe and "alpha: 0.5" in recipe


def test_vision_teacher_sees_the_mixed_batch_renormalised(vision_recipe, vision_run, tmp_path):
    teacher_before = _digest(vision_run)
    recipe = copy.deepcopy(vision_recipe)
    recipe["augmentation"] = {"mixup": 0.4}
    recipe["distill"] = {"teacher": str(vision_run), "alpha": 0.3, "temperature": 4.0}
    recipe["training"] = {**recipe["training"], "save_strategy": "no", "eval_strategy": "no",
                          "load_best_model_at_end": False}
    recipe["data"] = {**recipe["data"], "verify_images": False}
    hf_finetune.train(recipe)
    assert _digest(vision_run) == teacher_before

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, pixel_values):
            seen.append(pixel_values)
            return type("Out", (), {"logits": torch.zeros(len(pixel_values), 3)})()

    member = TeacherMember(Recorder(), 1.0, None, mean=torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1),
                           std=torch.tensor([0.2, 0.2, 0.1]).view(1, 3, 1, 1), size=(8, 8))
    distiller = Distiller([member], 1.0, 0.5, None, student_mean=torch.zeros(1, 3, 1, 1),
                          student_std=torch.ones(1, 3, 1, 1))
    raw = torch.rand(2, 3, 8, 8)
    distiller.teacher_log_probs({"pixel_values": raw})
    assert torch.allclose(seen[0], (raw - member.mean) / member.std)
    distiller.teacher_log_probs({"pixel_values": torch.rand(2, 3, 16, 16)})
    assert seen[1].shape == (2, 3, 8, 8)  # resized to the teacher's input size


def test_distill_mistakes_are_named(text_recipe, text_run, tmp_path, tiny_bert):
    with pytest.raises(RecipeError) as err:
        hf_finetune.load_recipe({**text_recipe, "distill": {"alpha": 0.3}})
    assert "distill.alpha: only applies with distill.teacher" in str(err.value)
    with pytest.raises(RecipeError, match="distill.teacher: .* holds no finished run"):
        hf_finetune.load_recipe({**text_recipe, "distill": {"teacher": str(tmp_path / "nothing")}})
    with pytest.raises(RecipeError, match="finetune.cache_features"):
        hf_finetune.load_recipe({**text_recipe, "finetune": {"strategy": "linear_probe", "cache_features": True},
                                 "distill": {"teacher": str(text_run)}})
    from .conftest import review_rows
    from .helpers.isolation import write_csv

    files = {s: str(write_csv(tmp_path / f"{s}.csv", review_rows(12, seed=i, labels=("bad", "good"))))
             for i, s in enumerate(("train", "validation", "test"))}
    other = {**_student(text_recipe, tmp_path / "out"), "data": {"files": files, "cache_dir": str(tmp_path / "c")},
             "distill": {"teacher": str(text_run)}}
    with pytest.raises(DataError, match="distill.teacher: .* predicts neg, pos but the data's labels are bad, good"):
        hf_finetune.train(other)
