"""The recipe is data: recipe/ imports nothing from the stages that use it, no module of it passes 400
lines, and the checks that need a capability still come in the same error as the recipe's own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hf_finetune.errors import RecipeError

from .conftest import REPO

RECIPE = REPO / "hf_finetune" / "recipe"
# What recipe/ may import from the package: itself and the utilities below every stage.
ALLOWED = ("hf_finetune.recipe", "hf_finetune.errors", "hf_finetune.files", "hf_finetune.logs")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every hf_finetune import in a file, inside functions too; `from package import
    module` names the module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = REPO.joinpath(*f"{node.module}.{alias.name}".split("."))
                is_module = sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file()
                found.append((node.lineno, f"{node.module}.{alias.name}" if is_module else node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "hf_finetune"]


def test_the_recipe_imports_no_stage_that_uses_it():
    wrong = [f"{path.relative_to(REPO)}:{line}: {name}" for path in sorted(RECIPE.rglob("*.py"))
             for line, name in _imports(path) if not name.startswith(ALLOWED)]
    assert not wrong, "recipe/ must not import these (move the check next to its section, or pass it in):\n" + \
        "\n".join(wrong)


def test_recipe_modules_stay_small():
    sizes = {str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines()) for p in RECIPE.rglob("*.py")}
    assert not {p: n for p, n in sizes.items() if n > 400}


def test_no_import_circle_inside_the_recipe():
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in RECIPE.rglob("*.py")}
    edges = {m: {name for _, name in _imports(p) if name in modules and name != m and not m.startswith(name + ".")}
             for m, p in modules.items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            pytest.fail("import circle: " + " -> ".join(path[path.index(module):] + (module,)))
        if module in done:
            return
        for target in edges[module]:
            visit(target, path + (module,))
        done.add(module)

    for module in sorted(modules):
        visit(module, ())


def test_capability_checks_come_with_the_recipes_own_problems(tmp_path):
    from hf_finetune.capability_checks import RECIPE_CHECKS
    from hf_finetune.recipe import validate_recipe

    train = tmp_path / "train.csv"
    train.write_text("text,label\na,x\nb,y\n")
    raw = {"task": "text-classification", "model": {"name": "m"}, "data": {"files": {"train": str(train)}},
           "metrics": ["acuracy"], "distill": {"teacher": str(tmp_path / "none")}}
    with pytest.raises(RecipeError) as caught:
        validate_recipe(raw, "r.yaml", checks=RECIPE_CHECKS)
    paths = [p.path for p in caught.value.problems]
    assert paths == ["metrics[0]", "distill.teacher"]
    assert "holds no finished run" in caught.value.problems[1].message
    with pytest.raises(RecipeError) as caught:
        validate_recipe(raw, "r.yaml")  # the recipe alone: its own problems only
    assert [p.path for p in caught.value.problems] == ["metrics[0]"]
