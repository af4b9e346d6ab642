"""Publish a finished run to the Hugging Face Hub: exactly the files its run.json lists, and run.json.

The token is never ours to hold: `huggingface_hub` finds HF_TOKEN or the saved login by itself. We
only ask whether one exists, so that a missing login fails with what to do rather than with an HTTP
401, and we scrub it from any message that passes through. Offline, a push fails at once (no retry
loop), and the local output, already complete, is left as it is.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any

from hf_finetune import hub
from hf_finetune.errors import UserError
from hf_finetune.files import write_text
from hf_finetune.hub import TOKEN_HINT, hub_token
from hf_finetune.outputs import CHECKPOINTS, RUN_FILE, STAGING, output_lock, read_finished_run

logger = logging.getLogger(__name__)

# Never uploaded, whatever run.json says: resumable state, half-published files, temporary files.
IGNORE_PATTERNS = [f"{STAGING}/*", f"{CHECKPOINTS}/*", "*.tmp"]
MODEL_FILES = ("config.json", "model.safetensors")
NOTHING_TO_PUSH = ": nothing to push"


class PushError(UserError):
    """The run is complete locally, but it could not be uploaded."""

    exit_code = 3  # distinct from 2 (nothing was trained): scripts can tell "trained, not pushed"


def hub_api() -> Any:
    """The Hub client: `huggingface_hub.HfApi` (tests replace this function, the one seam to the network)."""
    from huggingface_hub import HfApi

    return HfApi()


def check_repo_id(repo_id: str, key: str = "--repo-id") -> None:
    """Raises a UserError naming `key` when `repo_id` is not a valid Hub repository id."""
    from hf_finetune.recipe.sections.hub import repo_id_problem  # the recipe's rule for hub.repo_id

    problem = repo_id_problem(repo_id)
    if problem:
        raise UserError(f"{key}: {problem}")


def files_to_upload(out_dir: Path, run: dict[str, Any]) -> list[str]:
    """The run's listed files that exist, then run.json; a missing model file is an error."""
    listed = [name for name in run.get("files", []) if name != RUN_FILE]
    missing = [name for name in listed if not (out_dir / name).is_file()]
    lost = [name for name in missing if name in MODEL_FILES]
    if lost:
        raise UserError(f"OUTPUT_DIR: {out_dir} lacks {', '.join(lost)}, which run.json lists; the model is incomplete")
    if missing:
        logger.warning("Not uploading files that run.json lists but that are gone: %s", ", ".join(missing))
    return [name for name in listed if name not in missing] + [RUN_FILE]


def refresh_card(out_dir: Path, repo_id: str) -> None:
    """Renders README.md again so that its code loads `repo_id`, unless someone has edited the card."""
    from hf_finetune.report.card import CARD_FILE, default_model_id, render_card

    card = out_dir / CARD_FILE
    if not card.is_file():
        return
    finished = read_finished_run(out_dir)
    if finished.kind != "run":  # an ensemble's or a soup's card (hf_finetune.combine.card) names no repository
        return
    recipe, results, run = finished.recipe, finished.metrics, finished.manifest
    plots = [name for name in run.get("files", []) if name.endswith(".png")]
    current = card.read_text(encoding="utf-8")
    wanted = render_card(recipe, results, run, plots, model_id=repo_id)
    if current == wanted:
        return
    if current != render_card(recipe, results, run, plots, model_id=default_model_id(recipe)):
        logger.info("%s was edited after the run: uploading it as it is", card)
        return
    write_text(card, wanted)
    logger.info("%s now shows how to load %s", card, repo_id)


def push_output(out_dir: str | os.PathLike, repo_id: str, *, private: bool = True,
                revision: str | None = None) -> str:
    """Uploads a finished run's output folder to a Hub model repository (created when missing).

    Only the files run.json lists, and run.json itself, are uploaded: never `.staging/`,
    `checkpoints/` or anything else lying in the folder.

    Args:
        out_dir: the finished run's output folder.
        repo_id: `owner/name`, or `name` under the token's account.
        private: create the repository private (an existing one keeps its visibility).
        revision: the branch to push to, created from main when missing; None for main.

    Returns:
        The URL of the commit.

    Raises:
        UserError: the folder holds no finished run.
        PushError: the Hub is unreachable, there is no token, or the Hub refused; the message says
            the local output is complete and how to push it later.
    """
    out_dir = Path(out_dir)
    check_repo_id(repo_id)
    run = read_finished_run(out_dir, NOTHING_TO_PUSH).manifest
    later = (f"The local output in {out_dir} is complete; push it later with: "
             f"hf-finetune push {out_dir} --repo-id {repo_id}")
    reason = hub.unreachable_reason()
    if reason is not None:
        raise PushError(f"cannot push to '{repo_id}': the Hugging Face Hub is unreachable here ({reason}). {later}")
    token = hub_token()
    if token is None:
        raise PushError(f"cannot push to '{repo_id}': no Hugging Face token; {TOKEN_HINT}. {later}")

    with output_lock(out_dir, "push"):  # a run or evaluation writing here meanwhile would change the files
        return _upload(out_dir, run, repo_id, private, revision, token, later)


def _upload(out_dir: Path, run: dict[str, Any], repo_id: str, private: bool, revision: str | None, token: str,
            later: str) -> str:
    refresh_card(out_dir, repo_id)
    files = files_to_upload(out_dir, run)
    api = hub_api()
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)  # upload_folder needs it to exist
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(out_dir),
            revision=revision,
            allow_patterns=[glob.escape(name) for name in files],  # exact names, not patterns
            ignore_patterns=IGNORE_PATTERNS,
            commit_message=f"Upload fine-tuned {run.get('task', 'model')} model (hf-finetune)",
        )
    except Exception as exc:  # HTTP, connection and validation errors all mean the same here
        message = str(exc).replace(token, "***").strip() or type(exc).__name__
        raise PushError(f"pushing to '{repo_id}' failed: {message}\n{later}") from None
    url = str(getattr(commit, "commit_url", None) or repo_url)
    logger.info("Pushed %d files to %s%s: %s", len(files), repo_id, f" ({revision})" if revision else "", url)
    return url
