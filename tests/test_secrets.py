"""Secrets are never echoed: refused by key name or shape at any depth, without their value."""

from __future__ import annotations

import pytest

from hf_finetune.cli import main

from .conftest import write_recipe

TOKEN = "hf_" + "Q7xv" * 9  # the shape of a Hugging Face token (hf_ + 36 letters)


@pytest.mark.parametrize(("where", "place"), [
    ("card.license", lambda r: r.setdefault("card", {}).__setitem__("license", TOKEN)),
    ("training.lr_scheduler_kwargs.power", lambda r: r["training"].__setitem__("lr_scheduler_kwargs",
                                                                               {"power": TOKEN})),
    ("training.lr_scheduler_kwargs.token", lambda r: r["training"].__setitem__("lr_scheduler_kwargs",
                                                                               {"token": "abc123"})),
    ("model.token", lambda r: r["model"].__setitem__("token", "abc123")),
    ("training.hub_token", lambda r: r["training"].__setitem__("hub_token", TOKEN)),
    ("data.files.train[0]", lambda r: r["data"]["files"].__setitem__("train", [TOKEN])),
    ("password", lambda r: r.__setitem__("password", "hunter2-long-secret")),
    ("hub.client_secret", lambda r: r.setdefault("hub", {}).__setitem__("client_secret", "s3cr3t-value")),
])
def test_a_credential_anywhere_is_refused_without_its_value(tmp_path, text_recipe, capsys, where, place):
    place(text_recipe)
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    for command in (["check", str(path)], ["train", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{where}:" in err and "never go in a recipe" in err and "Traceback" not in err
        for value in (TOKEN, "abc123", "hunter2", "s3cr3t"):
            assert value not in err
    assert not (tmp_path / "out").exists()  # refused before any file is written


def test_a_refused_override_is_reported_without_its_value(tmp_path, text_recipe, capsys):
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    overrides = ["training.hub_token=abc123secret", f"card.license={TOKEN}", "model.api_key=zzz999",
                 f"training.lr_scheduler_kwargs.token={TOKEN}", TOKEN]
    assert main(["check", str(path), *overrides]) == 2
    err = capsys.readouterr().err
    for value in ("abc123secret", TOKEN, "zzz999"):
        assert value not in err
    assert "training.hub_token=***" in err and "model.api_key=***" in err


def test_settings_named_like_tokens_but_not_credentials_still_work(tmp_path, text_recipe):
    from hf_finetune.recipe import validate_recipe

    text_recipe["training"]["include_num_input_tokens_seen"] = "all"
    recipe = validate_recipe(text_recipe)
    assert recipe.training["include_num_input_tokens_seen"] == "all"
