"""The documentation stays true: README.md and every page under docs/.

- The recipe reference page is exactly what the schema generates (`hf-finetune fields --markdown`).
- `mkdocs build --strict` passes: no broken link or anchor, no page missing from the navigation.
- Code blocks are checked: commands (```bash) parse with the CLI's own parser, name files that exist
  and, for recipes of this repository, overrides that validate; recipes (```yaml) validate against the
  schema; Python (```python) compiles and every `hf_finetune.x.y` name it or the text uses resolves.
- Each command's page names every option of that command; `docs/recipes.md` names every recipe
  section; the package map in `docs/architecture.md` lists every module of `hf_finetune/`.
- CI (`.ci/run`) runs exactly the test command README.md gives.

After a schema change, regenerate the recipe reference with `python -m tests.test_docs`.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hf_finetune.recipe import field_reference, markdown_reference

from .conftest import REPO

DOCS = REPO / "docs"
REFERENCE_PAGE = DOCS / "reference" / "recipe.md"
FIELDS_START, FIELDS_END = "<!-- fields:start -->\n", "<!-- fields:end -->"

LANGUAGES = {"bash", "yaml", "python", "text"}  # text: output and diagrams, the only unchecked blocks
REPO_FOLDERS = ("recipes/", "examples/", "accelerate_configs/", "benchmarks/", "hf_finetune/", "tests/", "docs/")


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def page_ids() -> list[str]:
    return [str(p.relative_to(REPO)) for p in pages()]


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    body: str

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})(\S*)\s*$", lines[i])
        if opening:
            fence, start = opening.group(1), i
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != fence:
                body.append(lines[i])
                i += 1
            blocks.append(Block(page, start + 1, opening.group(2), "\n".join(body) + "\n"))
        i += 1
    return blocks


def prose(page: Path) -> str:
    """The page without its fenced code blocks."""
    return re.sub(r"^(`{3,})\S*\s*\n.*?^\1\s*$", "", page.read_text(), flags=re.S | re.M)


def blocks_of(language: str) -> list[Block]:
    return [b for p in pages() for b in fenced_blocks(p) if b.language == language]


# ---------------------------------------------------------------- the recipe reference


def reference_table(text: str) -> str:
    start = text.index(FIELDS_START) + len(FIELDS_START)
    return text[start:text.index(FIELDS_END)]


def write_recipe_reference() -> None:
    """Regenerates the table of docs/reference/recipe.md from the schema."""
    text = REFERENCE_PAGE.read_text()
    REFERENCE_PAGE.write_text(text.replace(reference_table(text), markdown_reference()))


def test_recipe_reference_page_matches_the_schema():
    assert reference_table(REFERENCE_PAGE.read_text()) == markdown_reference(), (
        "docs/reference/recipe.md is out of date: run python -m tests.test_docs (or paste the output of "
        "hf-finetune fields --markdown between its markers)"
    )


def test_recipes_page_names_every_recipe_section():
    sections = {key.split(".")[0] for key, *_ in field_reference()}
    text = (DOCS / "recipes.md").read_text()
    table = text[text.index("## The sections"):]
    named = {name for row in table.splitlines() if row.startswith("| `")
             for name in re.findall(r"`([\w.]+)`", row.split("|")[1])}
    assert not sections - named, f"docs/recipes.md 'The sections' lacks a row for {sorted(sections - named)}"
    assert not named - sections, f"docs/recipes.md 'The sections' names sections that do not exist: {sorted(named - sections)}"


# ---------------------------------------------------------------- the site


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason='mkdocs is not installed: pip install -e ".[docs]" (the dev extra includes it)')
    pytest.importorskip("material", reason='mkdocs-material is not installed: pip install -e ".[docs]"')
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"


def test_readme_links_point_at_files_that_exist():
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if "://" in target:
            continue
        assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"


# ---------------------------------------------------------------- code blocks


@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_code_blocks_are_fenced_with_a_checked_language(page):
    for block in fenced_blocks(page):
        assert block.language in LANGUAGES, (
            f"{block.where()}: a code block needs one of {sorted(LANGUAGES)} after its fence "
            "(bash, yaml and python blocks are checked; text is for output)"
        )
    lines = prose(page).splitlines()
    for before, line in zip(lines, lines[1:], strict=False):
        assert not (before.strip() == "" and line.startswith("    ") and line.strip()), (
            f"{page.relative_to(REPO)}: an indented code block ({line.strip()!r}) escapes the checks: fence it"
        )


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from hf_finetune.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _command_lines(body: str) -> list[str]:
    """Commands of a bash block: indented lines continue the one before; comments and redirections go."""
    logical: list[str] = []
    for line in body.splitlines():
        if line[:1].isspace() and logical:
            logical[-1] += " " + line.strip()
        elif line.strip():
            logical.append(line.strip())
    commands = []
    for line in logical:
        if _is_synopsis(line):  # `[--a | --b]` is notation, not a pipe
            commands.append(shlex.join(shlex.split(line, comments=True)))
            continue
        words = shlex.split(line, comments=True)
        command: list[str] = []
        redirected = False
        for word in [*words, "&&"]:
            if word in {"&&", "||", "|", ";"}:
                if command:
                    commands.append(shlex.join(command))
                command = []
            elif word in {">", ">>", "<", "2>"}:
                redirected = True  # the next word is a file, not an argument
            elif redirected:
                redirected = False
            else:
                command.append(word)
    return commands


def _is_synopsis(line: str) -> bool:
    """`hf-finetune train RECIPE [--resume]`: a usage line, with placeholders, not a command to run."""
    return "[" in line or "..." in line


def _check_paths(words: list[str], where: str) -> None:
    for word in words:
        if word.startswith(REPO_FOLDERS):
            assert (REPO / word).exists(), f"{where}: {word} does not exist"


def _check_hf_finetune(args: list[str], where: str) -> None:
    """One `hf-finetune ...` command: a synopsis names real options, an example parses and validates."""
    subparsers = _subparsers()
    line = " ".join(args)
    global_options = {"-v", "--verbose"}
    args = [a for a in args if a not in global_options]
    assert args and args[0] in subparsers, f"{where}: 'hf-finetune {line}': no such command"
    command = subparsers[args[0]]
    if _is_synopsis(line):  # its options must exist
        for option in re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", line):
            assert option in _options(command) | global_options, f"{where}: hf-finetune {args[0]} has no option {option}"
        return
    from hf_finetune.cli import build_parser

    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: 'hf-finetune {line}' does not parse (see the usage message above)")
    _check_paths(args, where)
    recipe = getattr(parsed, "recipe", None)
    if recipe and (REPO / recipe).is_file():
        from hf_finetune.errors import UserError
        from hf_finetune.recipe import load_recipe

        cwd = os.getcwd()
        os.chdir(REPO)  # paths in a recipe are relative to where the command runs
        try:
            load_recipe(recipe, parsed.overrides)
        except UserError as exc:
            pytest.fail(f"{where}: 'hf-finetune {line}': {exc}")
        finally:
            os.chdir(cwd)


def _check_command(words: list[str], where: str) -> None:
    if words[0] == "hf-finetune":
        _check_hf_finetune(words[1:], where)
    elif words[:2] == ["accelerate", "launch"]:
        line = " ".join(words)
        if not _is_synopsis(line):
            _check_paths(words, where)
        if "-m" in words:
            module = words[words.index("-m") + 1]
            assert module == "hf_finetune.cli", f"{where}: accelerate launch -m {module}"
            _check_hf_finetune(words[words.index("-m") + 2:], where)
        else:
            script = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
            assert script is not None and words[script] == "hf_finetune/run.py", f"{where}: {line}: no hf_finetune/run.py"
            _check_hf_finetune(["train", *words[script + 1:]], where)
    elif words[0] == "python" and len(words) > 1 and words[1].endswith(".py"):
        assert (REPO / words[1]).is_file(), f"{where}: {words[1]} does not exist"
    elif words[0] in {"python", "pip", "mkdocs", "createdb", ".", "source", "export", "tensorboard", "mlflow"}:
        return  # installing, testing, building the site, a database, a venv, a tracker: nothing of ours to check
    else:
        pytest.fail(f"{where}: {' '.join(words)}: a command the docs tests do not know; teach _check_command")


@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_commands_parse_and_name_what_exists(page):
    for block in fenced_blocks(page):
        if block.language == "bash":
            for command in _command_lines(block.body):
                _check_command(shlex.split(command), block.where())


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_recipes_validate(page, monkeypatch):
    """A recipe block validates as it stands (when it names a task) or set on a quickstart recipe.

    The examples name files and runs that are not in this repository (labelled.csv, a teacher
    folder): a problem that names one of those is expected; any other problem is a wrong example.
    """
    import hf_finetune
    from hf_finetune.errors import RecipeError

    monkeypatch.chdir(REPO)
    for block in fenced_blocks(page):
        if block.language != "yaml":
            continue
        fragment = yaml.safe_load(block.body)
        assert isinstance(fragment, dict), f"{block.where()}: a yaml block must be a recipe or a part of one"
        if "task" in fragment:
            recipe = fragment
        else:
            base = "quickstart_vision" if "augmentation" in fragment else "quickstart_text"
            recipe = _merge(yaml.safe_load((REPO / "recipes" / f"{base}.yaml").read_text()), copy.deepcopy(fragment))
        elsewhere = [s for s in _strings(fragment) if re.search(r"/|\.\w+$", s) and not Path(s).exists()]
        try:
            hf_finetune.check(recipe, data=False)
        except RecipeError as exc:
            wrong = [str(p) for p in exc.problems if not any(name in p.message for name in elsewhere)]
            assert not wrong, f"{block.where()}: the recipe does not validate:\n" + "\n".join(wrong)


@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_python_compiles_and_names_resolve(page):
    for block in fenced_blocks(page):
        if block.language == "python":
            compile(block.body, block.where(), "exec")
    for name in sorted(set(re.findall(r"\bhf_finetune(?:\.\w+)+", page.read_text()))):
        _resolve(name, str(page.relative_to(REPO)))


def _resolve(name: str, where: str) -> None:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            assert hasattr(target, attribute), f"{where}: {name} does not exist ({attribute!r} is missing)"
            target = getattr(target, attribute)
        return
    pytest.fail(f"{where}: {name} does not exist")


@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_paths_in_the_text_exist(page):
    """`recipes/x.yaml`, `benchmarks/y.py`, `models/pooling.py` (under hf_finetune/) name real files."""
    for token in sorted(set(re.findall(r"`([^`\s]+)`", prose(page)))):
        token = token.rstrip("/")
        if token.startswith(REPO_FOLDERS):
            assert (REPO / token).exists(), f"{page.relative_to(REPO)}: `{token}` does not exist"
        elif re.fullmatch(r"[\w./-]+\.py", token) and "/" in token:
            exists = (REPO / token).exists() or (REPO / "hf_finetune" / token).exists()
            assert exists, f"{page.relative_to(REPO)}: `{token}` names no file (from the repository or hf_finetune/)"


# ---------------------------------------------------------------- pages that mirror the code


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_every_command_has_a_page_naming_its_options(name):
    page = DOCS / "commands" / f"{name}.md"
    assert page.is_file(), f"hf-finetune {name} has no page: add docs/commands/{name}.md and list it in mkdocs.yml"
    text = page.read_text()
    missing = sorted(o for o in _options(_subparsers()[name]) if o.startswith("--") and o != "--help" and o not in text)
    assert not missing, f"docs/commands/{name}.md does not mention {missing}"
    assert f"[{name}]({name}.md)" in (DOCS / "commands" / "index.md").read_text(), (
        f"docs/commands/index.md's table lacks hf-finetune {name}"
    )


def _modules() -> set[str]:
    """Every module of hf_finetune/ as the package map names it: `data/text.py`, a package as `data/`."""
    package = REPO / "hf_finetune"
    names = set()
    for path in package.rglob("*.py"):
        relative = path.relative_to(package)
        if relative.parts[:2] == ("metrics", "modules"):
            continue  # the bundled evaluate modules: one row, `metrics/modules/`
        if path.name == "__init__.py":
            names.add("__init__.py" if len(relative.parts) == 1 else relative.parent.as_posix() + "/")
        else:
            names.add(relative.as_posix())
    return names | {"metrics/modules/"}


def test_package_map_lists_every_module():
    text = (DOCS / "architecture.md").read_text()
    table = text[text.index("## Package map"):]
    listed, introduced = set(), set()
    for row in table.splitlines():
        match = re.match(r"^\| `([^`]+)` \|", row)
        if match:
            (introduced if "being introduced" in row else listed).add(match.group(1))
    modules = _modules()
    covered = {m for m in modules if any(m.startswith(i) for i in introduced)}
    stale = sorted(listed - modules)
    assert not stale, f"docs/architecture.md's package map lists modules that do not exist: {stale}"
    missing = sorted(modules - listed - covered)
    assert not missing, f"docs/architecture.md's package map lacks a line for {missing}"


# ---------------------------------------------------------------- the test command


def _tests_block(page: Path) -> str:
    text = page.read_text()
    section = text[text.index("## Tests"):]
    return next(b for b in fenced_blocks(page) if b.language == "bash" and b.body.strip() in section).body.strip()


def test_ci_runs_the_readme_test_command():
    command = _tests_block(REPO / "README.md")
    assert "\n" not in command, "README.md's Tests block is one command line, the one .ci/run runs"
    assert command in (REPO / ".ci" / "run").read_text().splitlines(), ".ci/run must run README.md's test command"
    assert _tests_block(DOCS / "getting-started.md") == command, "docs/getting-started.md gives another test command"


if __name__ == "__main__":
    write_recipe_reference()
