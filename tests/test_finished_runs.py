"""Finished runs that are damaged, foreign or unwritable: every command that reads or writes one says what
is wrong, with the file or folder and what to do, never a traceback from deep inside a library."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hf_finetune.cli import main

from .conftest import write_recipe


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".hf-finetune.lock"))
    return dest


def _truncate(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _flip_bytes(path: Path) -> None:
    """Same size, other bytes (in the tensor data, past the header): only the hash can tell."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 64, len(data) - 32):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _refused(capsys, *argv: str) -> str:
    """The `error: ...` message of a command that must exit 2 (after any log lines), without a traceback."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "SafetensorError" not in err, err
    assert "\nerror: " in "\n" + err, err
    return "error: " + ("\n" + err).split("\nerror: ", 1)[1]


# --- 2. a damaged weights file --------------------------------------------------------------------------

@pytest.fixture(params=["truncated", "flipped"])
def damaged(request, text_run, tmp_path) -> Path:
    out = _copy(text_run, tmp_path / "damaged")
    (_truncate if request.param == "truncated" else _flip_bytes)(out / "model.safetensors")
    return out


def _says_damaged(err: str, out: Path) -> None:
    assert f"{out / 'model.safetensors'} is damaged" in err
    assert "restore" in err and "train" in err  # what to do


def test_a_damaged_weights_file_is_named_by_every_command(damaged, text_run, tmp_path, capsys):
    _says_damaged(_refused(capsys, "predict", str(damaged), "great"), damaged)
    _says_damaged(_refused(capsys, "evaluate", str(damaged)), damaged)
    _says_damaged(_refused(capsys, "ensemble", str(tmp_path / "soup"), str(damaged), str(text_run),
                           "--method", "soup"), damaged)
    _says_damaged(_refused(capsys, "ensemble", str(tmp_path / "ens"), str(text_run), str(damaged)), damaged)
    assert not (tmp_path / "soup").exists() or not (tmp_path / "soup" / "run.json").exists()


def test_a_damaged_weights_file_is_named_by_export(damaged, capsys):
    pytest.importorskip("onnxruntime")
    _says_damaged(_refused(capsys, "export", str(damaged), "--format", "onnx"), damaged)


def test_a_damaged_member_of_an_ensemble_is_named(text_run, tmp_path, capsys):
    second = _copy(text_run, tmp_path / "second")
    assert main(["ensemble", str(tmp_path / "ens"), str(text_run), str(second)]) == 0
    capsys.readouterr()
    member = next((tmp_path / "ens" / "members").glob("01-*"))
    (member / "model.safetensors").unlink()  # a hard link: the copy is damaged, not the source
    shutil.copyfile(second / "model.safetensors", member / "model.safetensors")
    _truncate(member / "model.safetensors")
    err = _refused(capsys, "predict", str(tmp_path / "ens"), "great")
    assert f"{member / 'model.safetensors'} is damaged" in err


def test_a_damaged_teacher_is_named_before_training(damaged, text_recipe, tmp_path, capsys):
    text_recipe["distill"] = {"teacher": str(damaged)}
    text_recipe["training"].update(num_train_epochs=1, save_strategy="no", eval_strategy="no",
                                   load_best_model_at_end=False)
    recipe = str(write_recipe(tmp_path / "student.yaml", text_recipe))
    for command in ("check", "train"):  # found by check, and by train before anything is loaded
        err = _refused(capsys, command, recipe)
        assert err.startswith(f"error: {recipe}: invalid recipe: distill.teacher: ")
        _says_damaged(err, damaged)
    assert not (tmp_path / "out").exists()


def test_a_run_without_recorded_checksums_is_still_checked(text_run, tmp_path, capsys):
    """Runs finished before run.json recorded checksums: a truncated safetensors file is found by its header."""
    out = _copy(text_run, tmp_path / "old")
    run = json.loads((out / "run.json").read_text())
    run.pop("checksums")
    (out / "run.json").write_text(json.dumps(run))
    assert main(["predict", str(out), "great"]) == 0
    capsys.readouterr()
    _truncate(out / "model.safetensors")
    _says_damaged(_refused(capsys, "predict", str(out), "great"), out)


def test_run_json_records_the_weights_checksums(text_run):
    import hashlib

    run = json.loads((text_run / "run.json").read_text())
    data = (text_run / "model.safetensors").read_bytes()
    assert run["checksums"]["model.safetensors"] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
