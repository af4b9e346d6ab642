"""The package's import graph: no circles, and every import runs from a higher stage to a lower one.

Imports inside functions count too: a lazy import is still a dependency. The stages are the ones
docs/architecture.md draws:

    base -> recipe -> data, metrics, outputs -> models -> tasks -> predictor -> training -> report, preflight,
         capability_checks
         -> pipeline -> capabilities (finished, search, rank, combine, selftrain) -> entry points
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hf_finetune"

STAGES = [
    {"errors", "files", "logs", "extras", "hub", "version"},  # shared by every stage
    {"recipe"},
    {"data", "metrics", "outputs"},
    {"models"},
    {"tasks"},
    {"predictor"},  # a finished run's model, loaded for predict, evaluate, ensembles and distillation teachers
    {"training"},
    {"report", "preflight", "capability_checks"},  # capability_checks: the recipe checks capabilities own
    {"pipeline"},
    {"finished", "search", "rank", "combine", "selftrain"},
    {"cli", "run", "__init__", "testing"},
]
STAGE = {name: rank for rank, names in enumerate(STAGES) for name in names}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (at module level or inside functions)."""
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target.startswith("hf_finetune") and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def stage_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return STAGE[top]


def test_every_module_has_a_stage():
    missing = sorted({m.split(".")[1] for m in modules() if "." in m} - set(STAGE))
    assert not missing, f"add these to STAGES (and docs/architecture.md): {missing}"


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_imports_run_from_higher_stages_to_lower_ones():
    upward = sorted((a, b) for a, targets in import_graph().items() for b in targets
                    if stage_of(b) > stage_of(a))
    assert not upward, "imports from a lower stage to a higher one:\n" + "\n".join(f"{a} -> {b}" for a, b in upward)


def test_a_circle_is_found():
    """The walker itself: a planted circle between two modules is reported."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_walker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """An import inside a function and a relative import are dependencies too."""
    package = tmp_path / "hf_finetune"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("def f():\n    from hf_finetune.sub import b\n")
    (package / "sub" / "b.py").write_text("from . import a\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", package)
    graph = import_graph()
    assert "hf_finetune.sub.b" in graph["hf_finetune.sub.a"] and "hf_finetune.sub.a" in graph["hf_finetune.sub.b"]
    assert circles(graph) == [["hf_finetune.sub.a", "hf_finetune.sub.b"]]
