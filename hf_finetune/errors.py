"""User-facing errors: the CLI prints these as a message, never as a traceback.

Every error names what the user can change: a recipe key (dotted path), a file, a column or a row.
"""

from __future__ import annotations

from dataclasses import dataclass


class UserError(Exception):
    """An error caused by the user's recipe, data or environment, printed without a traceback."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: where (dotted key path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


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


class TrainingAborted(UserError):
    """Training stopped on purpose (non-finite loss, preemption) with what to do next."""

    def __init__(self, message: str, exit_code: int = 1):
        self.exit_code = exit_code
        super().__init__(message)
