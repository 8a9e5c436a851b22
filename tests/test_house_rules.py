"""The house rules a newcomer relies on: no import circle inside the project (lazy imports
count: a lazy import is for a heavy dependency, never to hide a circle), no private name taken
from another module, and no file so long it does two jobs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "worker", "store", "sagan_core", "sagan_cli")
MAX_LINES = 500


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    return {
        module_name(path, root): path
        for package in PACKAGES
        if (root / package).is_dir()
        for path in sorted((root / package).rglob("*.py"))
    }


def _absolute(node: ast.ImportFrom, here: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = here.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, here: str, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(module, name) for every import in the file, lazy ones included; name is the imported
    name of a `from M import name` that is not itself a module."""
    found: list[tuple[str, str | None]] = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, here, is_package)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule, None) if submodule in modules else (source, alias.name))
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {
        name: {t for t, _ in imports_of(path, name, modules) if t in modules} - {name}
        for name, path in modules.items()
    }


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
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def private_imports(root: Path = ROOT) -> list[str]:
    modules = project_modules(root)
    wrong = []
    for name, path in modules.items():
        for source, imported in imports_of(path, name, modules):
            leaf = imported if imported is not None else source.rsplit(".", 1)[-1]
            private = leaf.startswith("_") and not leaf.startswith("__")
            if private and source.split(".")[0] in PACKAGES:
                wrong.append(f"{path.relative_to(root)} imports {leaf} from {source}")
    return wrong


def test_no_private_name_is_imported_from_another_module() -> None:
    assert private_imports() == []


def test_no_module_is_over_500_lines() -> None:
    long = {
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in project_modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, "\n".join(sorted(long))


def test_the_checker_sees_a_circle_hidden_by_a_lazy_import(tmp_path: Path) -> None:
    package = tmp_path / "sagan_core"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "data.py").write_text("from sagan_core.distributed import shard\n")
    (package / "distributed.py").write_text("def launch():\n    from . import data\n")
    (package / "models.py").write_text("from sagan_core import data\n")
    assert circles(import_graph(tmp_path)) == [["sagan_core.data", "sagan_core.distributed"]]


def test_the_checker_sees_a_private_import(tmp_path: Path) -> None:
    package = tmp_path / "worker"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text("def _claim():\n    pass\n")
    (package / "datasets.py").write_text("def f():\n    from worker.tasks import _claim, name\n")
    assert private_imports(tmp_path) == ["worker/datasets.py imports _claim from worker.tasks"]
