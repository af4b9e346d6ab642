"""`hub`: publishing the finished run to the Hugging Face Hub; what a valid repository id is."""

from __future__ import annotations

from pydantic import Field, field_validator

from hf_finetune.errors import Problem
from hf_finetune.recipe.sections.base import Section


def repo_id_problem(value: str) -> str | None:
    """Why `value` is not a valid Hub repository id (owner/name or name), or None when it is one."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return (f"'{value}' is not a valid Hub repository id: use owner/name or name (letters, digits, "
                "'-', '_' and '.'; at most 96 characters)")
    return None


def hub_id(value: str | None) -> str | None:
    """A Hub repository id (owner/name or name), or None; a field validator of the hub and card sections."""
    if value is not None:
        problem = repo_id_problem(value)
        if problem:
            raise ValueError(problem)
    return value


class HubSpec(Section):
    """Publishing the finished run; the token comes from HF_TOKEN or `hf auth login`, never from here."""

    push: bool = Field(
        False, description="Upload the finished output folder to the Hub (token: HF_TOKEN or `hf auth login`)."
    )
    repo_id: str | None = Field(None, description="Hub repository to push to: owner/name (or name, under your account).")
    private: bool = Field(
        True, description="Create the repository private; an existing repository keeps its visibility."
    )
    revision: str | None = Field(None, description="Branch to push to (created when missing; default: main).")

    @field_validator("repo_id")
    @classmethod
    def _valid_repo_id(cls, value: str | None) -> str | None:
        return hub_id(value)


def hub_problems(hub: HubSpec) -> list[Problem]:
    if hub.push and hub.repo_id is None:
        return [Problem("hub.repo_id", "required when hub.push is true (e.g. my-name/my-model)")]
    return []
