"""README.md stays true: the recipe reference table, the test command that CI runs."""

from __future__ import annotations

from hf_finetune.recipe import markdown_reference

from .conftest import REPO


def test_readme_recipe_reference_matches_the_schema():
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- fields:start -->\n") + len("<!-- fields:start -->\n")
    end = readme.index("<!-- fields:end -->")
    assert readme[start:end] == markdown_reference(), "run: hf-finetune fields --markdown, and paste into README.md"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    command = 'python -m pip install -e ".[dev]" && python -m pytest'
    assert f"    {command}\n" in readme
    assert command in (REPO / ".ci" / "run").read_text().splitlines()
