"""User-facing errors: the CLI prints these as a message, never as a traceback.

Every error names what the user can change: a recipe key (dotted path), a file, a column or a row.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from typing import Any


class UserError(Exception):
    """An error caused by the user's recipe, data or environment, printed without a traceback."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: where (dotted key path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return redact(text)  # a last guard: no message prints a token


class RecipeError(UserError):
    """A recipe with one or more problems, all reported at once."""

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__(self._format())

    def _format(self) -> str:
        where = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return f"{where}invalid recipe: {self.problems[0]}"
        lines = [f"{where}invalid recipe, {len(self.problems)} problems:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class DataError(UserError):
    """The dataset does not match the recipe: missing file, column, label or split."""


class ModelError(UserError):
    """The backbone cannot be found or built as the recipe asks."""


class HubUnreachableError(UserError):
    """The recipe needs the Hugging Face Hub and it cannot be reached."""


class OutputExistsError(UserError):
    """The output folder already holds a finished run."""


class OutputNotWritableError(UserError):
    """A folder to write into cannot be created or written (a read-only place, /proc, a full disk)."""


class OutputLockedError(UserError):
    """Another process is using the output folder."""


class NotAFinishedRunError(UserError):
    """The folder holds no model or run that this package wrote."""


class DamagedRunError(NotAFinishedRunError):
    """A finished run's file is cut short, changed or missing (checked against run.json's checksums)."""


class TrainingAborted(UserError):
    """Training stopped on purpose (non-finite loss, preemption) with what to do next."""

    def __init__(self, message: str, exit_code: int = 1):
        self.exit_code = exit_code
        super().__init__(message)


# --- message helpers: the one did-you-mean and value display of the package ---------------------------

def closest(name: str, choices: typing.Iterable[str], *, prefixes: bool = True, cutoff: float = 0.7) -> str | None:
    """The closest valid name for a misspelt one, or None when nothing is close.

    With `prefixes`, a name that begins valid ones ('adamw' for 'adamw_torch') suggests the first of
    them, in the order the choices are given (for enums, the library's own order, most common first).
    `cutoff` is difflib's similarity threshold (0..1).
    """
    choices = list(choices)
    starts = [c for c in choices if isinstance(c, str) and name and c.startswith(name)] if prefixes else []
    if starts:
        return starts[0]
    matches = difflib.get_close_matches(name, choices, n=1, cutoff=cutoff)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: typing.Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest valid name, or an empty string."""
    match = closest(name, choices)
    return f"; did you mean '{match}'?" if match else ""


def show(value: Any, limit: int = 60) -> str:
    """A value as it appears in a message: its repr, shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- secrets: recognised by key name or by shape, never printed ----------------------------------------

# Hugging Face user and organisation tokens, wherever they occur in a string: joined to a word on either side
# (`out_hf_...`, `xhf_...`, `train_hf_....csv`) they are still tokens, so no word boundary is asked for.
_TOKEN = re.compile(r"(hf_|api_org_)[A-Za-z0-9]{16,}")
_SECRET_WORDS = ("password", "passwd", "secret", "api_key", "apikey", "credential")
TOKEN_HINT = "run `hf auth login` or set the HF_TOKEN environment variable"  # where tokens go instead


def is_secret_key(name: Any) -> bool:
    """True for keys that name a credential: token, hub_token, hf_token, password, client_secret, api_key."""
    if not isinstance(name, str):
        return False
    low = name.lower()
    return low == "token" or low.endswith("_token") or low.startswith("token_") or any(
        word in low for word in _SECRET_WORDS)


def looks_like_token(value: Any) -> bool:
    """True for strings that contain a Hugging Face token (hf_... or api_org_...)."""
    return isinstance(value, str) and _TOKEN.search(value) is not None


# Credentials of hosted trackers and the Hub, read from the environment by their libraries: their values are
# redacted wherever they occur (they have no recognisable shape of their own, unlike hf_ tokens).
SECRET_ENVIRONMENT = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "MLFLOW_TRACKING_TOKEN",
                      "MLFLOW_TRACKING_PASSWORD", "COMET_API_KEY", "NEPTUNE_API_TOKEN", "CLEARML_API_SECRET_KEY",
                      "SWANLAB_API_KEY", "DAGSHUB_USER_TOKEN")


def redact(text: str) -> str:
    """`text` with anything shaped like a token replaced by `hf_***`, and the value of any credential
    variable of SECRET_ENVIRONMENT by `***`."""
    import os

    text = _TOKEN.sub(lambda m: m.group(1) + "***", text)
    for name in SECRET_ENVIRONMENT:
        value = os.environ.get(name)
        if value and len(value) >= 8:  # a short value would blank out ordinary words
            text = text.replace(value, "***")
    return text


def refuse_tokens(named: typing.Iterable[tuple[str, Any]]) -> None:
    """Refuses the first (name, value) whose value, or a string in it (a list), is shaped like a token.

    For names and paths given outside a recipe (command-line arguments): they end up in file names,
    run.json and model cards, so the recipe's rule applies to them, by the same detector.

    Raises:
        UserError: naming the argument, never the value.
    """
    for name, value in named:
        values = value if isinstance(value, list | tuple) else [value]
        if any(looks_like_token(v) for v in values):
            raise UserError(f"{name}: looks like a Hugging Face token; tokens never go on the command line or in "
                            f"file names: {TOKEN_HINT} (the value is not shown, saved or logged)")


class IncompatibleMembersError(UserError):
    """Members that cannot be combined (different labels, backbones or architectures), named."""
