"""Nothing lost: resume after SIGKILL equals an uninterrupted run; SIGTERM checkpoints; NaN stops."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_finetune.cli import main
from hf_finetune.training.checkpoints import checkpoint_problem, latest_complete_checkpoint, list_checkpoints

from .conftest import REPO, write_recipe

HELPER = REPO / "tests" / "helpers" / "train_then_die.py"
COMPARED = ("accuracy", "precision", "recall", "f1", "loss", "confusion_matrix", "per_class")


@pytest.fixture
def resumable(tmp_path, text_recipe):
    """12 optimizer steps over 2 epochs, evaluated and checkpointed every 2 steps, with dropout on."""
    text_recipe["training"].update(
        num_train_epochs=2, per_device_train_batch_size=8, eval_strategy="steps", save_strategy="steps",
        eval_steps=2, save_steps=2, save_total_limit=2,
    )
    return text_recipe


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model.safetensors")


def comparable_metrics(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    return {split: {k: metrics[split][k] for k in COMPARED} for split in ("validation", "test")}


def train_in_process(tmp_path: Path, recipe: dict, name: str, *extra: str) -> int:
    path = write_recipe(tmp_path / f"{name}.yaml", recipe)
    return main(["train", str(path), *extra])


def run_helper(recipe_path: Path, point: str, step: int, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HELPER), point, str(step), "train", str(recipe_path), *overrides],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def start_helper(recipe_path: Path, point: str, step: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HELPER), point, str(step), "train", str(recipe_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


@pytest.fixture
def uninterrupted(tmp_path, resumable):
    resumable["output"]["dir"] = str(tmp_path / "straight")
    assert train_in_process(tmp_path, resumable, "straight") == 0
    return tmp_path / "straight"


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, resumable, uninterrupted):
    expected_weights, expected_metrics = weights(uninterrupted), comparable_metrics(uninterrupted)
    expected_train = json.loads((uninterrupted / "metrics.json").read_text())["train"]
    # Killed mid-epoch (after step 3, checkpoint 2 on disk), right after the checkpoint that ends
    # epoch 1, in epoch 2, and while writing checkpoint 8 (which must be skipped).
    points = [("kill-after-step", 3, 2), ("kill-after-save", 6, 6), ("kill-after-step", 9, 8), ("kill-mid-save", 8, 6)]
    # The four runs to be killed start together (each in its own folder): their startup is most of their time.
    started = {}
    for point, step, _ in points:
        resumable["output"]["dir"] = str(tmp_path / f"{point}-{step}")
        path = write_recipe(tmp_path / f"{point}-{step}.yaml", resumable)
        started[point, step] = (path, start_helper(path, point, step))
    for point, step, resumed_from in points:
        out = tmp_path / f"{point}-{step}"
        path, helper = started[point, step]
        _, stderr = helper.communicate(timeout=600)
        assert helper.returncode == -9, stderr[-2000:]
        assert not (out / "run.json").exists()
        if point == "kill-mid-save":
            assert checkpoint_problem(out / "checkpoints" / f"checkpoint-{step}") == "trainer_state.json is missing"

        assert main(["train", str(path), "--resume"]) == 0
        run_metrics = json.loads((out / "metrics.json").read_text())
        assert run_metrics["train"]["resumed_from"].endswith(f"checkpoint-{resumed_from}"), point
        got = weights(out)
        for key, value in expected_weights.items():
            assert torch.equal(got[key], value), f"{point} {step}: {key} differs after resume"
        assert comparable_metrics(out) == expected_metrics
        # The record of training too: the loss over all 12 steps and the phases since step 0.
        assert run_metrics["train"]["loss"] == pytest.approx(expected_train["loss"], rel=1e-6), point
        assert final_train_loss(out) == pytest.approx(expected_train["loss"], rel=1e-6), point  # training_log.json
        assert run_metrics["train"]["phases"] == expected_train["phases"], point


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_step_boundary_and_says_how_to_resume(tmp_path, resumable):
    # The last step's weights, not the best evaluation's: a resume that strays after step 6 shows.
    resumable["training"]["load_best_model_at_end"] = False
    uninterrupted = tmp_path / "straight"
    resumable["output"]["dir"] = str(uninterrupted)
    assert train_in_process(tmp_path, resumable, "straight") == 0
    out = tmp_path / "preempted"
    resumable["output"]["dir"] = str(out)
    path = write_recipe(tmp_path / "preempted.yaml", resumable)
    # Step 6 is an evaluation step and the end of epoch 1: both would evaluate in an ordinary run.
    stopped = run_helper(path, "term-at-step", 6, "training.seed=42", "data.seed=42")
    assert stopped.returncode == 128 + 15, stopped.stderr[-2000:]
    checkpoint = out / "checkpoints" / "checkpoint-6"
    assert f"stopped by SIGTERM after step 6; checkpoint saved in {checkpoint}" in stopped.stderr
    assert f"Resume with: hf-finetune train {path} training.seed=42 data.seed=42 --resume" in stopped.stderr
    assert "EVALUATED AFTER SIGTERM" not in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert checkpoint_problem(checkpoint) is None
    assert not (out / "run.json").exists()

    # Without --resume the unfinished run is protected; with it, the run completes as if never stopped.
    assert main(["train", str(path)]) == 2
    assert main(["train", str(path), "--resume"]) == 0
    for key, value in weights(uninterrupted).items():
        assert torch.equal(weights(out)[key], value), key
    # The loss of the whole run, in training_log.json as in metrics.json: not only the steps since the resume.
    for run in (out, uninterrupted):
        loss = json.loads((run / "metrics.json").read_text())["train"]["loss"]
        assert final_train_loss(run) == pytest.approx(loss, rel=1e-6), run.name


def final_train_loss(out: Path) -> float:
    """The run's mean training loss as training_log.json's last record of it (the Trainer's `train_loss`)."""
    log = json.loads((out / "training_log.json").read_text())
    return [entry["train_loss"] for entry in log if "train_loss" in entry][-1]


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
        tmp_path, resumable, monkeypatch, capsys):
    from hf_finetune.training.trainer import ClassificationLoss

    calls = {"n": 0}
    original = ClassificationLoss.__call__

    def poisoned(self, logits, labels):
        loss = original(self, logits, labels)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 5:  # the 5th training step
                return loss * float("nan")
        return loss

    monkeypatch.setattr(ClassificationLoss, "__call__", poisoned)
    assert train_in_process(tmp_path, resumable, "nan") == 1
    err = capsys.readouterr().err
    checkpoints = tmp_path / "out" / "checkpoints"
    assert "the loss became NaN or infinite at step 5 (epoch 0.67), before that step changed any weight" in err
    assert f"the last good checkpoint is {checkpoints / 'checkpoint-4'}" in err
    assert "training.learning_rate (now 0.001)" in err and "--resume" in err
    assert checkpoint_problem(checkpoints / "checkpoint-4") is None
    assert [p.name for p in list_checkpoints(checkpoints)] == ["checkpoint-2", "checkpoint-4"]
    assert not (tmp_path / "out" / "run.json").exists()


def test_incomplete_checkpoints_are_skipped_and_removed(tmp_path, resumable, caplog):
    resumable["output"]["keep_checkpoints"] = True
    assert train_in_process(tmp_path, resumable, "kept") == 0
    folder = tmp_path / "out" / "checkpoints"
    newest = list_checkpoints(folder)[-1]
    weights_file = newest / "model.safetensors"
    data = weights_file.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    weights_file.write_bytes(data[: header_end + 100])  # header whole, tensors cut
    assert checkpoint_problem(newest) == "model.safetensors is cut short"
    chosen = latest_complete_checkpoint(folder, remove_incomplete=True)
    assert chosen is not None and chosen != newest and not newest.exists()
    assert f"Skipping incomplete checkpoint {newest} (model.safetensors is cut short" in caplog.text
    (chosen / "trainer_state.json").write_text('{"global_st')
    assert checkpoint_problem(chosen) == "trainer_state.json is cut short"


def test_resume_of_a_finished_run_changes_nothing(tmp_path, text_recipe, caplog):
    assert train_in_process(tmp_path, text_recipe, "r") == 0
    before = (tmp_path / "out" / "model.safetensors").read_bytes()
    assert main(["train", str(tmp_path / "r.yaml"), "--resume"]) == 0
    assert "holds a finished run" in caplog.text and "nothing to resume" in caplog.text
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == before
    assert main(["train", str(tmp_path / "r.yaml"), "--resume", "output.overwrite=true"]) == 2


def test_resume_with_no_checkpoint_starts_from_the_beginning(tmp_path, text_recipe, caplog):
    text_recipe["training"]["resume_from_checkpoint"] = "auto"
    assert train_in_process(tmp_path, text_recipe, "fresh") == 0
    assert "Nothing to resume" in caplog.text
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["train"]["resumed_from"] is None


def test_resume_warns_about_recipe_changes(tmp_path, resumable, caplog):
    resumable["output"]["dir"] = str(tmp_path / "changed")
    path = write_recipe(tmp_path / "changed.yaml", resumable)
    assert run_helper(path, "kill-after-step", 3).returncode == -9
    assert main(["train", str(path), "--resume", "training.learning_rate=5e-4"]) == 0
    assert "differs from the one the run started with: training.learning_rate (0.001 -> 0.0005)" in caplog.text


def test_a_run_paused_at_a_share_of_its_steps_resumes_to_the_uninterrupted_weights(tmp_path, resumable, monkeypatch,
                                                                                    caplog):
    """rank.by finetune pauses each candidate's run at a share of its steps (search/trials.PauseAt) and resumes
    the ones it keeps: the paused run evaluates there, keeps its checkpoint and no finished model, and resumed
    it trains what one uninterrupted run trains (the same schedule: the run keeps its own total steps)."""
    from hf_finetune.search.trials import RunPaused, TrialPlan, run_trial, trial_dir, trial_recipe

    resumable["training"]["load_best_model_at_end"] = False  # the last step's weights: a stray resume shows
    resumable["training"].pop("learning_rate")  # a data-aware default to record and read back
    straight = TrialPlan(resumable, None, tmp_path / "straight", "accuracy")
    value = run_trial(straight, trial_recipe(straight, {}, 0), None, 0)
    paused = TrialPlan(resumable, None, tmp_path / "paused", "accuracy")
    with pytest.raises(RunPaused) as stop:
        run_trial(paused, trial_recipe(paused, {}, 0), None, 0, pause_at=0.4)  # step 5 of 12: not an evaluation step
    assert (stop.value.step, stop.value.max_steps) == (5, 12) and 0.0 <= stop.value.value <= 1.0
    out = trial_dir(tmp_path / "paused", 0)
    assert checkpoint_problem(out / "checkpoints" / "checkpoint-5") is None and not (out / "run.json").exists()
    # The resume reads the data-aware defaults the run started with instead of deciding them again.
    import hf_finetune.pipeline as pipeline

    recorded = json.loads((out / "checkpoints" / "decisions.json").read_text())
    assert "training.learning_rate" in {d["key"] for d in recorded}
    monkeypatch.setattr(pipeline, "data_aware_decisions", lambda *a, **k: pytest.fail("decided again on resume"))
    with caplog.at_level(logging.INFO, logger="hf_finetune"):
        assert run_trial(paused, trial_recipe(paused, {}, 0), None, 0, resume=True) == value
    assert "Resuming with the data-aware defaults the run started with" in caplog.text
    assert all(f"Default from the data: {d['key']} = {d['value']} ({d['reason']})" in caplog.text for d in recorded)
    monkeypatch.undo()
    for key, tensor in weights(trial_dir(tmp_path / "straight", 0)).items():
        assert torch.equal(weights(out)[key], tensor), key
    # A share that reaches the last step pauses nothing: the run finishes.
    whole = TrialPlan(resumable, None, tmp_path / "whole", "accuracy")
    assert run_trial(whole, trial_recipe(whole, {}, 0), None, 0, pause_at=0.999) == value
