"""The package's imports follow the data flow (docs/design.md, "Import rules"): each stage
imports only the stages before it, and no modules import each other in a loop.

Every import counts, at module level or inside a function; only imports under
``if TYPE_CHECKING:`` (annotations) are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hpc_forget"
FOUNDATION = {"__init__", "errors", "files"}

# Which parts of the package each part may import (besides itself and the foundation).
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),
    "errors": set(),
    "files": {"errors"},
    "data": set(),
    "store": set(),
    "study": {"data"},
    "models": {"study", "data"},
    "run": {"study", "data", "models", "store"},
    "analysis": {"study", "data", "models", "store"},
    "cluster": {"study", "data", "models", "run", "store"},
    "worker": {"cluster"},
    "cli": {"study", "data", "models", "run", "store", "cluster", "analysis"},
}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, name: str) -> set[str]:
    """The hpc_forget modules ``tree`` imports, as dotted names under hpc_forget."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("hpc_forget."):
                    found.add(a.name.removeprefix("hpc_forget."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "hpc_forget":
                for a in node.names:
                    found.add(
                        a.name
                        if (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file()
                        else "__init__"
                    )
            elif node.module.startswith("hpc_forget."):
                mod = node.module.removeprefix("hpc_forget.")
                for a in node.names:  # `from hpc_forget.store import store` names a module
                    sub = f"{mod}.{a.name}"
                    found.add(sub if (PACKAGE / f"{sub.replace('.', '/')}.py").is_file() else mod)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def module_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: modules it imports}, dotted under the package (``run.engine``, ``errors``)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
        name = ".".join(parts)
        graph[name] = _imports(ast.parse(path.read_text(), str(path)), name)
    return graph


def part(module: str) -> str:
    return module.split(".")[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """One line per import that points against the flow."""
    out = []
    for mod, deps in sorted(graph.items()):
        src = part(mod)
        may = ALLOWED[src] | {src} | (set() if src in FOUNDATION else FOUNDATION)
        out += [
            f"{mod} imports {dep}: {src} may import only {sorted(ALLOWED[src])}"
            for dep in sorted(deps)
            if part(dep) not in may
        ]
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_every_part_has_a_rule():
    assert {part(m) for m in module_graph()} <= set(ALLOWED)


def test_imports_point_one_way():
    assert layer_violations(module_graph()) == []


def test_no_import_loops():
    assert cycles(module_graph()) == []


def test_the_checks_catch_a_back_edge_and_a_loop(tmp_path):
    """The rules above on a made-up package: a store module importing analysis, and two
    modules importing each other (one lazily, inside a function)."""
    pkg = tmp_path / "hpc_forget"
    for sub in ("store", "analysis", "study"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "store" / "store.py").write_text("from hpc_forget.analysis.load import x\n")
    (pkg / "analysis" / "load.py").write_text("x = 1\n")
    (pkg / "study" / "a.py").write_text("from hpc_forget.study.b import y\n")
    (pkg / "study" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hpc_forget.store import store\n"
        "def f():\n    from hpc_forget.study.a import z\n"
    )
    graph = module_graph(pkg)
    assert graph["study.b"] == {"study.a"}  # the TYPE_CHECKING import does not count
    assert layer_violations(graph) == [
        "store.store imports analysis.load: store may import only []"
    ]
    assert cycles(graph) == [["study.a", "study.b"]]


def test_no_private_name_is_imported_across_sub_packages():
    """Underscored helpers stay inside their sub-package (docs/design.md, Names)."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = path.relative_to(PACKAGE).parts[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hpc_forget."):
                there = node.module.split(".")[1]
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private and there != here:
                    bad.append(f"{path.relative_to(PACKAGE)}: {node.module} {private}")
    assert not bad, bad
