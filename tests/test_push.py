"""Pushing to the Hub with the client replaced at its boundary: exactly the run's files, never the token."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects

from hf_finetune import hub
from hf_finetune.cli import main
from hf_finetune.finished import push as push_module

from .conftest import write_recipe

SECRET = "hf_PushTestTokenThatMustNeverBeWritten42"


class FakeHub:
    """Stands in for `huggingface_hub.HfApi`: records calls, and resolves upload_folder's file selection with
    huggingface_hub's own filter, as the real upload does, reading every selected file."""

    def __init__(self, fail: Exception | None = None):
        self.calls: list[tuple] = []
        self.uploaded: dict[str, bytes] = {}
        self.fail = fail

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, *, branch, exist_ok=False, **kwargs):
        self.calls.append(("create_branch", repo_id, branch, exist_ok))

    def upload_folder(self, *, repo_id, folder_path, revision=None, allow_patterns=None, ignore_patterns=None,
                      **kwargs):
        self.calls.append(("upload_folder", repo_id, revision))
        if self.fail is not None:
            raise self.fail
        root = Path(folder_path)
        every = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
        for rel in filter_repo_objects(every, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            self.uploaded[rel] = (root / rel).read_bytes()
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc123"})()


@pytest.fixture
def online(monkeypatch):
    """The Hub 'answers', a token is in the environment, and the client is the fake."""
    fake = FakeHub()
    monkeypatch.setattr(hub, "unreachable_reason", lambda: None)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(push_module, "hub_api", lambda: fake)
    return fake


@pytest.fixture
def finished(tmp_path, text_run) -> Path:
    """A copy of a finished run, with what must never be uploaded lying around in it."""
    out = Path(shutil.copytree(text_run, tmp_path / "run"))
    (out / ".staging").mkdir()
    (out / ".staging" / "model.safetensors").write_bytes(b"half-written")
    (out / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoints" / "checkpoint-3" / "optimizer.pt").write_bytes(b"state")
    (out / "my notes [draft].txt").write_text("not part of the run")
    (out / "metrics.json.tmp").write_text("{}")
    return out


def listed(out: Path) -> set[str]:
    return set(json.loads((out / "run.json").read_text())["files"]) | {"run.json"}


def assert_no_secret(out: Path, fake: FakeHub, *texts: str):
    for text in texts:
        assert SECRET not in text
    for name, content in fake.uploaded.items():
        assert SECRET.encode() not in content, name
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_push_uploads_exactly_the_runs_files(finished, online, capsys, caplog):
    with caplog.at_level(logging.DEBUG):
        assert main(["push", str(finished), "--repo-id", "me/tiny-reviews"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "https://huggingface.co/me/tiny-reviews/commit/abc123"
    assert set(online.uploaded) == listed(finished)
    assert {"README.md", "model.safetensors", "config.json", "training_loss.png", "run.json"} <= set(online.uploaded)
    assert not any(name.startswith((".staging", "checkpoints")) or name.endswith(".tmp") for name in online.uploaded)
    assert online.calls == [("create_repo", "me/tiny-reviews", True, True), ("upload_folder", "me/tiny-reviews", None)]
    assert online.uploaded["model.safetensors"] == (finished / "model.safetensors").read_bytes()
    # The untouched card now shows how to load the repository.
    card = ModelCard(online.uploaded["README.md"].decode())
    assert 'pipeline("text-classification", model="me/tiny-reviews")' in card.text
    assert card.data.to_dict()["model-index"][0]["name"] == "tiny-reviews"
    assert_no_secret(finished, online, captured.out, captured.err, caplog.text)


def test_push_to_a_branch_of_a_public_repo_with_evaluations(finished, online):
    assert main(["evaluate", str(finished)]) == 0
    assert main(["push", str(finished), "--repo-id", "me/tiny", "--no-private", "--revision", "v2"]) == 0
    assert online.calls == [("create_repo", "me/tiny", False, True), ("create_branch", "me/tiny", "v2", True),
                            ("upload_folder", "me/tiny", "v2")]
    assert {"evaluation-test.json", "evaluation-test-confusion_matrix.png"} <= set(online.uploaded)
    assert set(online.uploaded) == listed(finished)


def test_an_edited_card_is_uploaded_as_it_is(finished, online):
    card = finished / "README.md"
    card.write_text(card.read_text().replace("## How to use", "Written by me.\n\n## How to use"))
    edited = card.read_text()
    assert main(["push", str(finished), "--repo-id", "me/tiny"]) == 0
    assert online.uploaded["README.md"].decode() == edited == card.read_text()


def test_the_recipe_pushes_after_training(tmp_path, text_recipe, online, capfd):
    text_recipe["hub"] = {"push": True, "repo_id": "me/from-recipe", "revision": "main"}
    text_recipe["output"]["keep_checkpoints"] = True  # left in the folder, never uploaded
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    assert main(["train", str(path)]) == 0
    out = tmp_path / "out"
    assert (out / "checkpoints").is_dir()
    assert set(online.uploaded) == listed(out)
    assert online.calls[0] == ("create_repo", "me/from-recipe", True, True)
    assert 'model="me/from-recipe"' in (out / "README.md").read_text()  # rendered for the repository at once
    captured = capfd.readouterr()
    assert_no_secret(out, online, captured.out, captured.err)


def test_offline_push_fails_fast_and_the_local_output_stays_complete(tmp_path, text_recipe, monkeypatch, capsys,
                                                                    caplog, request):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    text_recipe["hub"] = {"push": True, "repo_id": "me/offline"}
    path = write_recipe(tmp_path / "recipe.yaml", text_recipe)
    with caplog.at_level(logging.WARNING, logger="hf_finetune"):
        assert main(["train", str(path)]) == 3
    out = tmp_path / "out"
    err = capsys.readouterr().err
    assert "error: cannot push to 'me/offline': the Hugging Face Hub is unreachable here" in err
    assert f"The local output in {out} is complete; push it later with: hf-finetune push {out} --repo-id me/offline" \
        in err
    assert "hub.push: the Hugging Face Hub is unreachable here" in caplog.text  # warned before training
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and (out / "model.safetensors").is_file() and (out / "README.md").is_file()

    request.getfixturevalue("no_retry_waits")  # from here on, a retry loop (it sleeps) fails the test
    assert main(["push", str(out)]) == 3  # the repository comes from the run's recipe
    assert "the Hugging Face Hub is unreachable here" in capsys.readouterr().err


def test_without_a_token_the_message_says_how_to_log_in(finished, monkeypatch, capsys):
    monkeypatch.setattr(hub, "unreachable_reason", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(push_module, "hub_api", lambda: pytest.fail("no client without a token"))
    assert main(["push", str(finished), "--repo-id", "me/tiny"]) == 3
    err = capsys.readouterr().err
    assert "cannot push to 'me/tiny': no Hugging Face token; run `hf auth login` or set the HF_TOKEN" in err
    assert f"The local output in {finished} is complete" in err


def test_a_refused_upload_is_reported_without_the_token(finished, online, capsys):
    online.fail = RuntimeError(f"401 Client Error: Unauthorized (token {SECRET} lacks write access)")
    before = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    assert main(["push", str(finished), "--repo-id", "me/tiny"]) == 3
    err = capsys.readouterr().err
    assert "pushing to 'me/tiny' failed: 401 Client Error: Unauthorized (token *** lacks write access)" in err
    assert SECRET not in err
    changed = [p for p, content in before.items() if p.read_bytes() != content]
    assert changed == [finished / "README.md"]  # only the card learnt the repository id


@pytest.mark.parametrize("args, message", [
    ([], "error: --repo-id: say which Hub repository to push to"),
    (["--repo-id", "a/b/c"], "error: --repo-id: 'a/b/c' is not a valid Hub repository id"),
])
def test_push_arguments_are_checked(finished, online, capsys, args, message):
    assert main(["push", str(finished), *args]) == 2
    assert message in capsys.readouterr().err and not online.calls


def test_only_a_finished_run_is_pushed(tmp_path, online, capsys):
    assert main(["push", str(tmp_path), "--repo-id", "me/tiny"]) == 2
    assert f"error: OUTPUT_DIR: {tmp_path} holds no finished run (no complete run.json): nothing to push" \
        in capsys.readouterr().err
    assert not online.calls
