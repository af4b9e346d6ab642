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


# A token joined to a word on either side: no word boundary before `hf_`.
JOINED = [f"out_{TOKEN}", f"x{TOKEN}", f"train_{TOKEN}.csv", f"{TOKEN}_run", f"a-{TOKEN}-b", f"dir/{TOKEN}/x",
          f"api_org_{'Q7xv' * 5}", f"xapi_org_{'Q7xv' * 5}"]


@pytest.mark.parametrize("value", JOINED)
def test_the_token_shape_is_found_wherever_it_occurs_in_a_string(value):
    from hf_finetune.errors import looks_like_token, redact

    assert looks_like_token(value)
    assert "Q7xvQ7xv" not in redact(f"error: {value} and {value}")
    assert not looks_like_token("hf_short") and not looks_like_token("a shelf_of_books_and_more_words")


@pytest.mark.parametrize(("where", "place"), [
    ("output.dir", lambda r, tmp: r["output"].__setitem__("dir", str(tmp / f"out_{TOKEN}"))),
    ("data.files.train[0]", lambda r, tmp: r["data"]["files"].__setitem__("train", [str(tmp / f"train_{TOKEN}.csv")])),
    ("training.run_name", lambda r, tmp: r["training"].__setitem__("run_name", f"x{TOKEN}")),
])
def test_a_token_joined_to_a_word_in_a_recipe_is_refused(tmp_path, text_recipe, capsys, where, place):
    place(text_recipe, tmp_path)
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    for command in ("check", "train"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert f"{where}: looks like a Hugging Face token" in err and TOKEN not in err
    assert not list(tmp_path.glob("out*"))


def test_names_and_paths_on_the_command_line_are_checked_for_tokens(text_run, tmp_path, capsys):
    """They end up in file names, run.json and cards: the same rule as the recipe, before anything is written."""
    before = {p: p.stat().st_mtime_ns for p in text_run.rglob("*")}
    data = tmp_path / f"new_{TOKEN}.csv"
    data.write_text("text,label\ngood,pos\nbad,neg\n")
    for argv, option in ((["evaluate", str(text_run), "--name", f"x{TOKEN}"], "--name"),
                         (["evaluate", str(text_run), "--data", str(data)], "--data"),
                         (["evaluate", str(text_run), "--output-dir", str(tmp_path / f"e_{TOKEN}")], "--output-dir"),
                         (["ensemble", str(tmp_path / f"ens_{TOKEN}"), str(text_run), str(text_run)], "OUT_DIR"),
                         (["export", str(text_run), "--format", "onnx", "--output-dir", str(tmp_path / TOKEN)],
                          "--output-dir"),
                         (["predict", str(text_run), f"great {TOKEN}"], "INPUTS"),
                         (["predict", str(text_run), "great", "--output", str(tmp_path / f"p{TOKEN}.csv")], "--output"),
                         (["push", str(text_run), "--repo-id", f"me/m{TOKEN}"], "--repo-id")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {option}: looks like a Hugging Face token"), err
        assert "Q7xvQ7xv" not in err and "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in text_run.rglob("*")} == before  # nothing written in the run
    assert sorted(p.name for p in tmp_path.iterdir()) == [data.name]
