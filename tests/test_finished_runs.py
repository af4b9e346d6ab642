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


# --- 3. output locations that cannot be created ------------------------------------------------------------

def _no_such_place() -> str:
    """A folder that cannot be created: under /proc, where the system refuses new entries."""
    return "/proc/hf-finetune-test/out"


def test_evaluate_and_export_name_an_output_dir_they_cannot_create(text_run, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    err = _refused(capsys, "evaluate", str(text_run), "--output-dir", _no_such_place())
    assert err.startswith(f"error: --output-dir: cannot create {_no_such_place()}: ")
    pytest.importorskip("onnxruntime")
    err = _refused(capsys, "export", str(text_run), "--format", "onnx", "--output-dir", str(tmp_path / "afile"))
    assert err.startswith(f"error: --output-dir: {tmp_path / 'afile'} is a file, not a folder")
    err = _refused(capsys, "export", str(text_run), "--format", "onnx", "--output-dir", _no_such_place())
    assert err.startswith(f"error: --output-dir: cannot create {_no_such_place()}: ")


@pytest.fixture
def rank_recipe(tmp_path, tiny_resnet, pattern_folder):
    return {"task": "image-classification", "model": {"name": str(tiny_resnet)},
            "data": {"image_folder": str(pattern_folder), "cache_dir": str(tmp_path / "cache")},
            "rank": {"candidates": [str(tiny_resnet)]}, "output": {"dir": str(tmp_path / "out")}}


def test_rank_names_an_output_dir_or_cache_it_cannot_create(rank_recipe, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    path = write_recipe(tmp_path / "r.yaml", rank_recipe)
    err = _refused(capsys, "rank", str(path), "--output-dir", str(tmp_path / "afile" / "rank"))
    assert err.startswith(f"error: --output-dir: {tmp_path / 'afile' / 'rank'} sits under {tmp_path / 'afile'}, "
                          "which is a file")
    for key, value in (("rank.cache_dir", tmp_path / "afile"), ("rank.output_dir", tmp_path / "afile" / "x"),
                       ("rank.cache_dir", _no_such_place())):
        for command in ("check", "rank"):  # check finds it first
            err = _refused(capsys, command, str(path), f"{key}={value}")
            assert f"{key}: " in err and str(value) in err, err


def test_check_finds_what_train_refuses_about_the_output_folder(text_recipe, tmp_path, capsys):
    path = write_recipe(tmp_path / "r.yaml", text_recipe)
    project = tmp_path / "project"  # someone else's files, as in / or a source tree
    project.mkdir()
    (project / "main.py").write_text("print('mine')\n")
    for override, message in ((f"output.dir={project}", f"output.dir: {project} holds files that hf-finetune did "
                                                         "not write (main.py)"),
                              (f"output.dir={_no_such_place()}", f"output.dir: cannot create {_no_such_place()}"),
                              (f"data.cache_dir={_no_such_place()}", f"data.cache_dir: cannot create "
                                                                     f"{_no_such_place()}")):
        for command in ("check", "train"):
            err = _refused(capsys, command, str(path), override)
            assert message in err, (command, err)


def test_check_finds_class_weights_that_do_not_fit_the_labels(text_recipe, tmp_path, capsys):
    path = write_recipe(tmp_path / "r.yaml", text_recipe)
    for override, message in (("finetune.class_weights=[1, 2, 3]", "gives 3 weights for 2 labels (neg, pos)"),
                              ("finetune.class_weights={neg: 1, maybe: 2}", "'maybe' is not a label")):
        for command in ("check", "train"):
            err = _refused(capsys, command, str(path), override)
            assert f"finetune.class_weights: {message}" in err, (command, err)


@pytest.fixture
def immutable(tmp_path):
    """Makes folders immutable (chattr +i: not even root may add a file) for the test, and mutable again after."""
    import subprocess

    folders = []

    def make(folder: Path) -> Path:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("chattr +i is not available here")
        folders.append(folder)
        return folder

    yield make
    for folder in folders:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


def test_export_names_a_run_folder_whose_lock_cannot_be_written(text_run, tmp_path, capsys, immutable):
    pytest.importorskip("onnxruntime")
    run = immutable(_copy(text_run, tmp_path / "run"))
    err = _refused(capsys, "export", str(run), "--format", "onnx", "--output-dir", str(tmp_path / "onnx"))
    assert err.startswith(f"error: OUTPUT_DIR: cannot write the lock file {run / '.hf-finetune.lock'}: ")
    assert "make the folder writable" in err
    err = _refused(capsys, "evaluate", str(run), "--output-dir", str(tmp_path / "eval"))
    assert "cannot write the lock file" in err


# --- 4. export of an ensemble folder ------------------------------------------------------------------------

def test_export_of_an_ensemble_says_how_to_export_its_members(text_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    second = _copy(text_run, tmp_path / "second")
    assert main(["ensemble", str(tmp_path / "ens"), str(text_run), str(second)]) == 0
    capsys.readouterr()
    err = _refused(capsys, "export", str(tmp_path / "ens"), "--format", "onnx")
    members = sorted((tmp_path / "ens" / "members").iterdir())
    assert err.startswith(f"error: OUTPUT_DIR: {tmp_path / 'ens'} is an ensemble of 2 runs")
    assert f"hf-finetune export {members[0]} --format onnx" in err and "distill.teacher" in err
    assert not (tmp_path / "ens" / "onnx").exists()


# --- 5. predict --onnx with a file that is not ONNX ---------------------------------------------------------

@pytest.mark.parametrize("content", [b"garbage\n", b"", b"\x08\x07" * 100], ids=["text", "empty", "bytes"])
def test_predict_onnx_with_a_file_that_is_not_onnx(text_run, tmp_path, capsys, content):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "model.onnx"
    model.write_bytes(content)
    err = _refused(capsys, "predict", str(text_run), "great", "--onnx", "--onnx-model", str(model))
    assert err.startswith(f"error: --onnx-model: {model} is not an ONNX model that ONNX Runtime can load")
    assert "hf-finetune export" in err and "onnxruntime" not in err.split("(")[0]


def test_predict_onnx_with_another_models_export(text_run, vision_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert main(["export", str(vision_run), "--format", "onnx", "--output-dir", str(tmp_path / "vision")]) == 0
    capsys.readouterr()
    err = _refused(capsys, "predict", str(text_run), "great", "--onnx", "--onnx-model",
                   str(tmp_path / "vision" / "model.onnx"))
    assert err.startswith(f"error: --onnx-model: {tmp_path / 'vision' / 'model.onnx'} ")
    assert "image-classification" in err and "text-classification" in err


def test_predict_onnx_checks_a_recorded_export(text_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    run = _copy(text_run, tmp_path / "run")
    assert main(["export", str(run), "--format", "onnx"]) == 0
    capsys.readouterr()
    _truncate(run / "onnx" / "model.onnx")
    err = _refused(capsys, "predict", str(run), "great", "--onnx")
    assert f"{run / 'onnx' / 'model.onnx'} is damaged" in err
    assert main(["predict", str(run), "great"]) == 0  # the PyTorch model is fine
    assert main(["export", str(run), "--format", "onnx"]) == 0  # and exporting again mends it
    assert main(["predict", str(run), "great", "--onnx"]) == 0
