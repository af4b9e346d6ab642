"""The output folder loses nothing: overwrite keeps the old run until the new one publishes, foreign
folders are refused, and one process at a time uses a folder."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from hf_finetune.cli import main
from hf_finetune.outputs import LOCK_FILE, output_lock, publish, read_finished_run, read_run
from hf_finetune.outputs.folder import PREVIOUS, recover_interrupted_publish

from .conftest import write_recipe


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(tmp_path, text_recipe):
    text_recipe["training"]["num_train_epochs"] = 1
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    assert main(["train", str(path)]) == 0
    return path, Path(text_recipe["output"]["dir"])


def test_a_failed_overwrite_leaves_the_old_run_as_it_was(finished, monkeypatch, capsys):
    from hf_finetune.training.trainer import ClassificationLoss

    path, out = finished
    before = _snapshot(out)
    original = ClassificationLoss.__call__

    def poisoned(self, logits, labels):  # the new run crashes one step into training
        loss = original(self, logits, labels)
        return loss * float("nan") if torch.is_grad_enabled() else loss

    monkeypatch.setattr(ClassificationLoss, "__call__", poisoned)
    assert main(["train", str(path), "output.overwrite=true"]) == 1
    assert "NaN or infinite" in capsys.readouterr().err
    after = {k: v for k, v in _snapshot(out).items() if not k.startswith(".next-checkpoints/")}
    assert after == before
    assert read_finished_run(out).metrics["train"]["steps"] == 3


def test_an_overwrite_replaces_exactly_the_old_runs_files(finished, tmp_path):
    path, out = finished
    (out / "notes.txt").write_text("mine")  # the user's own file: never ours to remove
    old_files = set(read_run(out)["files"])
    (out / "evaluation-extra.json").write_text("{}")
    run = json.loads((out / "run.json").read_text())
    run["files"].append("evaluation-extra.json")  # an evaluation recorded after the run
    (out / "run.json").write_text(json.dumps(run))
    assert main(["train", str(path), "output.overwrite=true", "training.seed=7"]) == 0
    new = read_run(out)
    assert new["training"]["seed"] == 7 and set(new["files"]) == old_files
    assert not (out / "evaluation-extra.json").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / PREVIOUS).exists() and not (out / ".next-checkpoints").exists()
    assert not (out / "checkpoints").exists()


def test_a_publish_killed_midway_is_rolled_back_to_the_old_run(finished, tmp_path, monkeypatch):
    _, out = finished
    before = _snapshot(out)
    staging = out / ".staging"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"new weights")
    (staging / "only-new.txt").write_text("new")
    real_replace = os.replace

    def dying_replace(src, dst):
        if Path(src) == staging / "only-new.txt":  # the new model is in place, the rest is not
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        publish(staging, out, {"task": "text-classification"})
    monkeypatch.setattr(os, "replace", real_replace)
    assert read_run(out) is None and (out / PREVIOUS / "run.json").is_file()
    recover_interrupted_publish(out)
    after = {k: v for k, v in _snapshot(out).items() if not k.startswith(".staging/")}
    assert after == before
    assert not (out / "only-new.txt").exists() and not (out / PREVIOUS).exists()


@pytest.mark.parametrize("folder", ["", ".", "repo"])
def test_a_folder_of_someone_elses_files_is_refused(tmp_path, text_recipe, monkeypatch, capsys, folder):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("the repository's own readme")
    monkeypatch.chdir(repo)
    text_recipe["output"]["dir"] = folder if folder != "repo" else str(repo)
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    if folder == "":
        assert "output.dir: must name a folder" in err
    else:
        assert "holds files that hf-finetune did not write (README.md)" in err
    assert (repo / "README.md").read_text() == "the repository's own readme"
    assert sorted(os.listdir(repo)) == ["README.md"]


def test_an_output_dir_that_is_a_file_or_under_one_is_a_recipe_error(tmp_path, text_recipe, capsys):
    (tmp_path / "afile").write_text("x")
    for value, message in [(tmp_path / "afile", "is a file, not a folder"),
                           (tmp_path / "afile" / "out", "which is a file")]:
        text_recipe["output"]["dir"] = str(value)
        path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
        assert main(["check", str(path), "--schema-only"]) == 2
        err = capsys.readouterr().err
        assert f"output.dir: {value}" in err and message in err and "Traceback" not in err


def test_a_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(finished, capsys, caplog):
    path, out = finished
    with output_lock(out, "evaluate"):
        holder = json.loads((out / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        # Another process holding it: this process's own lock is re-entrant, so pretend to be pid 1.
        (out / LOCK_FILE).write_text(json.dumps({**holder, "pid": 1, "process_start": None}))
        assert main(["train", str(path), "output.overwrite=true"]) == 2
        err = capsys.readouterr().err
        assert f"output.dir: {out} is in use by hf-finetune evaluate (pid 1 on {socket.gethostname()}" in err
        assert main(["evaluate", str(out)]) == 2
        assert "is in use by" in capsys.readouterr().err
        (out / LOCK_FILE).write_text(json.dumps(holder))
    assert not (out / LOCK_FILE).exists()
    dead = {"pid": 2 ** 22 + 12345, "host": socket.gethostname(), "process_start": None}
    (out / LOCK_FILE).write_text(json.dumps(dead))
    assert main(["evaluate", str(out)]) == 0
    assert "Removing a stale lock" in caplog.text and not (out / LOCK_FILE).exists()
