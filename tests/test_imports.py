"""The project's own imports, read from the source with `ast` (nothing of the project is imported):
every import of a `stages` module sits at the top of its file, and the modules import each other
without a cycle.

An import hidden in a function dodges a cycle instead of removing it, and fails only when that
function first runs. Imports under `if TYPE_CHECKING:` never run: they are allowed, and are not
edges of the graph. Importing `stages.a.b` runs `stages/a/__init__.py` first, so it is an edge to
the package `stages.a` too (unless the importer is inside that package, which is then already
being imported).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "stages"


def module_names(root: Path) -> dict[str, Path]:
    """Every module under `root` (the package's folder) by dotted name; a package by its own."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _type_checking(node: ast.stmt) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def split_imports(tree: ast.Module) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """The module's import statements: (at the top level, anywhere else). Those under
    `if TYPE_CHECKING:` are in neither; its `else:` branch runs, so its imports are elsewhere."""
    top: list[ast.stmt] = []
    nested: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            top.append(node)
            continue
        inside: list[ast.AST] = [node]
        if _type_checking(node):
            assert isinstance(node, ast.If)
            inside = list(node.orelse)
        for part in inside:
            nested += [n for n in ast.walk(part) if isinstance(n, ast.Import | ast.ImportFrom)]
    return top, nested


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module a `from ... import` reads from, with a relative one resolved."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def targets(node: ast.stmt, importer: str, modules: dict[str, Path]) -> set[str]:
    """The project modules an import statement loads. `from stages.x import y` loads
    `stages.x.y` when that is a module, else `stages.x`; every package above a loaded module
    is loaded too, except the importer's own packages."""
    loaded: set[str] = set()
    if isinstance(node, ast.Import):
        loaded = {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
        source = _absolute(node, importer, modules[importer].name == "__init__.py")
        for a in node.names:
            sub = f"{source}.{a.name}"
            loaded.add(sub if sub in modules else source)
    loaded = {m for m in loaded if m == PACKAGE or m.startswith(PACKAGE + ".")}
    own = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    for name in list(loaded):
        parts = name.split(".")
        loaded |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return {m for m in loaded if m in modules and m not in own}


def import_graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Each module's project imports at its top level (the edges), and every project import
    elsewhere as `path:line: statement`."""
    graph: dict[str, set[str]] = {}
    misplaced: list[str] = []
    for name, path in modules.items():
        source = path.read_text()
        top, nested = split_imports(ast.parse(source, str(path)))
        graph[name] = set().union(*(targets(n, name, modules) for n in top))
        for n in nested:
            if targets(n, name, modules) or _names_project(n):
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                misplaced.append(f"{where}:{n.lineno}: {ast.get_source_segment(source, n)}")
    return graph, misplaced


def _names_project(node: ast.stmt) -> bool:
    """An absolute import naming the package (caught even when the name is not a module)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level:
        names = [node.module or ""]
    else:
        names = []
    return any(n == PACKAGE or n.startswith(PACKAGE + ".") for n in names)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as `[a, b, ..., a]`, or None when it has none (depth-first search;
    the first cycle in sorted order, so a failure names the same one every run)."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


# --- the project -------------------------------------------------------------------------------


def _project() -> tuple[dict[str, Path], dict[str, set[str]], list[str]]:
    modules = module_names(ROOT / PACKAGE)
    graph, misplaced = import_graph(modules)
    return modules, graph, misplaced


def test_every_project_import_is_at_the_top_of_its_file() -> None:
    _, _, misplaced = _project()

    assert not misplaced, (
        "imports of project modules inside a function, class or block (move them to the top of "
        "the file; a cycle they would cause is to be removed, e.g. via stages.errors):\n"
        + "\n".join(misplaced)
    )


def test_the_project_modules_import_each_other_without_a_cycle() -> None:
    _, graph, _ = _project()

    cycle = find_cycle(graph)

    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_holds_the_imports_it_should() -> None:
    """The checks above pass on an empty graph too: the edges they read are really there."""
    modules, graph, _ = _project()

    assert {"stages.errors", "stages.models", "stages.techniques.options"} <= graph["stages.params"]
    assert "stages.techniques.catalog" in graph["stages.optimize"]
    assert "stages.techniques.base" in graph["stages.techniques.fuse"]
    assert "stages.techniques" not in graph["stages.techniques.fuse"]  # its own package
    assert len(graph) == len(modules) > 40


def test_stages_errors_imports_only_the_standard_library() -> None:
    """Any module may import its errors from stages.errors: it must never import one back."""
    path = ROOT / PACKAGE / "errors.py"
    top, nested = split_imports(ast.parse(path.read_text()))

    assert not nested
    roots = set()
    for node in top:
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", *sys.stdlib_module_names}, roots


# --- the checks themselves, on made-up code -----------------------------------------------------


def test_find_cycle_finds_a_cycle_and_only_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"y"}}) == ["y", "z", "y"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_misplaced_imports_and_cycles_are_found_in_made_up_modules(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "sub/__init__.py": "from stages.sub import leaf\n",
        "sub/leaf.py": "from stages import errors\n",
        "errors.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from stages import params\n",
        "params.py": "import json\n\nfrom stages.sub.leaf import x\n\n\n"
        "def f():\n    from stages.errors import ParamsError\n",
        "cli.py": "from . import params\n\nif __name__ == '__main__':\n    import stages.errors\n",
        "loop_a.py": "from stages import loop_b\n",
        "loop_b.py": "import stages.loop_a\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)

    modules = module_names(pkg)
    graph, misplaced = import_graph(modules)

    assert graph["stages.params"] == {"stages.sub", "stages.sub.leaf"}  # the package runs first
    assert graph["stages.sub"] == {"stages.sub.leaf"}  # its own package is not an edge
    assert graph["stages.sub.leaf"] == {"stages.errors"}
    assert graph["stages.errors"] == set()  # under TYPE_CHECKING
    assert graph["stages.cli"] == {"stages.params"}  # a relative import, resolved
    assert [m.split(": ", 1)[1] for m in misplaced] == [
        "import stages.errors",
        "from stages.errors import ParamsError",
    ]
    assert misplaced[1].endswith("params.py:7: from stages.errors import ParamsError")
    assert find_cycle(graph) == ["stages.loop_a", "stages.loop_b", "stages.loop_a"]
