"""Nothing let in: remote code only when asked (and named), safe YAML, no tokens in logs or files."""

from __future__ import annotations

import json
import logging

import pytest

from hf_finetune.cli import main
from hf_finetune.errors import ModelError
from hf_finetune.models.backbones import load_text_config
from hf_finetune.recipe import ModelSpec

from .conftest import write_recipe


@pytest.fixture
def remote_code_model(tmp_path):
    """A model folder whose config needs its own Python code; importing that code leaves a marker."""
    folder = tmp_path / "custom-model"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / "config.json").write_text(json.dumps({
        "model_type": "sneaky", "auto_map": {"AutoConfig": "configuration_sneaky.SneakyConfig"}}))
    (folder / "configuration_sneaky.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class SneakyConfig(PretrainedConfig):\n    model_type = 'sneaky'\n"
    )
    return folder, marker


def test_remote_code_is_refused_by_default(remote_code_model):
    folder, marker = remote_code_model
    with pytest.raises(ModelError) as info:
        load_text_config(ModelSpec(name=str(folder)))
    assert str(info.value) == (
        f"model.name: {folder} ships its own Python code, which runs only with model.trust_remote_code: true; "
        "read that code before you allow it"
    )
    assert not marker.exists()


def test_remote_code_runs_only_when_the_recipe_says_so_with_a_warning(remote_code_model, caplog):
    from hf_finetune.models.backbones import warn_remote_code

    folder, marker = remote_code_model
    spec = ModelSpec(name=str(folder), trust_remote_code=True)
    with caplog.at_level(logging.WARNING, logger="hf_finetune"):
        warn_remote_code(spec)
        load_text_config(spec)
    assert marker.exists()
    assert f"Python code from '{folder}' will run on this machine" in caplog.text


def test_no_token_reaches_logs_or_saved_files(tmp_path, text_recipe, monkeypatch, capfd):
    secret = "hf_SECRETtokenThatMustNotLeak0123456789"
    monkeypatch.setenv("HF_TOKEN", secret)
    text_recipe["output"]["keep_checkpoints"] = True
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    assert main(["train", str(path)]) == 0
    captured = capfd.readouterr()
    assert secret not in captured.out and secret not in captured.err
    for file in (tmp_path / "out").rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), file
