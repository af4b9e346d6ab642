"""Talking to the Hugging Face Hub: decide quickly whether it can be reached, and say so clearly.

Libraries retry network calls for a long time when the Hub cannot be reached. We probe the Hub's
endpoint once with a short timeout; when it is unreachable, Hub ids are resolved from the local
cache only (`local_files_only`), and a miss becomes a `HubUnreachableError` that says how to point
the recipe at a local path instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from hf_finetune.errors import TOKEN_HINT, HubUnreachableError

PROBE_TIMEOUT_S = 3.0


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def offline_mode_requested() -> bool:
    """True when the user asked the Hugging Face libraries to stay offline."""
    return _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE") or _env_flag("HF_DATASETS_OFFLINE")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@functools.cache
def unreachable_reason() -> str | None:
    """None when the Hub answers; otherwise why it cannot be used (offline mode, DNS, refused, timeout)."""
    if offline_mode_requested():
        return "offline mode is set (HF_HUB_OFFLINE)"
    url = urlparse(endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"


def is_local_path(name: str) -> bool:
    """True when `name` names something on disk (a folder or file), not a Hub id."""
    return Path(name).expanduser().exists()


def looks_like_path(name: str) -> bool:
    """Paths the user meant as local (./x, ../x, /x, ~/x, x/y/z), whether or not they exist."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name


def unreachable_error(key: str, name: str, what: str, local_hint: str) -> HubUnreachableError:
    reason = unreachable_reason() or "the download failed"
    return HubUnreachableError(
        f"{key}: '{name}' is not a local path, so the {what} must come from the Hugging Face Hub, "
        f"which is unreachable here ({reason}), and it is not in the local cache.\n"
        f"  {local_hint}"
    )


@contextlib.contextmanager
def datasets_offline():
    """Makes `datasets` resolve Hub datasets from its cache only, for the duration of the block."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = True
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved



def hub_token() -> str | None:
    """The token `huggingface_hub` would use (HF_TOKEN, then the saved login), or None."""
    from huggingface_hub import get_token

    return get_token()


def push_readiness(repo_id: str) -> str | None:
    """Why a push to `repo_id` would fail now (no Hub, no token), for a warning before training; None if ready."""
    reason = unreachable_reason()
    if reason is not None:
        return (f"hub.push: the Hugging Face Hub is unreachable here ({reason}); training goes ahead, the push "
                f"to '{repo_id}' at the end will fail, and `hf-finetune push` can upload the run later")
    if hub_token() is None:
        return (f"hub.push: no Hugging Face token found ({TOKEN_HINT}); without one the push to '{repo_id}' "
                "at the end of training will fail")
    return None
