"""Issue 10, item 6: no import circles, in the core or in any backend package.

The graph is drawn from the source with `ast`: every `import` and `from ... import` of the package's
own modules, at module level or inside a function (a lazy import is still a dependency), except
those under `if TYPE_CHECKING:` (annotations only, never run). It must be acyclic, and the media
layer (artifacts, decoding, muxing, file metadata) must not reach up to requests, results or
provenance.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The core, the test kit, and every backend package (a new provider is covered the day it lands).
PACKAGES = {
    "mediagen": ROOT / "sdk" / "mediagen",
    "mediagen_testkit": ROOT / "testkit" / "mediagen_testkit",
    **{folder.name: folder for folder in sorted((ROOT / "backends").glob("mediagen_*")) if folder.is_dir()},
}
MEDIA_LAYER = ["mediagen.artifacts", "mediagen._media", "mediagen._mux", "mediagen._embedding", "mediagen._types"]
ABOVE_MEDIA = {"mediagen.requests", "mediagen.results", "mediagen.provenance", "mediagen"}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(package: str, folder: Path) -> dict[str, set[str]]:
    """Module → the modules of the same package it imports at run time."""
    modules: dict[str, Path] = {}
    for path in folder.rglob("*.py"):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([package, *parts])] = path

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        base = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()

        def visit(node: ast.AST, base: str = base, deps: set[str] = deps) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child):
                    for other in child.orelse:
                        visit(other)
                    continue
                if isinstance(child, ast.ImportFrom):
                    if child.level:
                        anchor = base.split(".")[: len(base.split(".")) - (child.level - 1)]
                        target = ".".join(anchor + ([child.module] if child.module else []))
                    else:
                        target = child.module or ""
                    for alias in child.names:
                        full = f"{target}.{alias.name}"
                        deps.add(full if full in modules else target)
                elif isinstance(child, ast.Import):
                    deps.update(alias.name for alias in child.names)
                visit(child)

        visit(ast.parse(path.read_text(), filename=str(path)))
        graph[name] = {dep for dep in deps if dep in modules and dep != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := walk(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_circles(package: str) -> None:
    graph = import_graph(package, PACKAGES[package])
    assert len(graph) > 1
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_media_layer_sits_below_requests_results_and_provenance() -> None:
    graph = import_graph("mediagen", PACKAGES["mediagen"])

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for dep in graph[todo.pop()]:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    for module in MEDIA_LAYER:
        assert not reach(module) & ABOVE_MEDIA, (module, sorted(reach(module) & ABOVE_MEDIA))
    assert "mediagen._embedding" in reach("mediagen.provenance")  # provenance above the media layer


def test_the_checker_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
