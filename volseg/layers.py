"""The layers of volseg and a static scan of the imports between its modules.

Imports run one way, from the bottom layer up::

    0  geometry and the foundations (errors, checks, options, provenance, yamlconfig,
       colors, ngff, ...)
    1  io, models, synth, metrics, cluster
    2  inference, crf, instances, postprocess, train, preview, bench
    3  workflow, stages
    4  cli

A module may import from its own layer or a lower one, never from a higher one, and
no chain of imports may come back to where it started (an import cycle).  The scan
reads the source with :mod:`ast` (nothing is imported) and counts every ``import``
statement: at module level, inside functions, and under ``if TYPE_CHECKING``.
``tests/test_layering.py`` checks the rules; ``benchmarks/code_shape.py`` reports the
figures.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Layer of each top-level part of the ``volseg`` package (``volseg.<part>``).
LAYERS: dict[str, int] = {
    "__init__": 0, "__main__": 4, "geometry": 0, "errors": 0, "options": 0,
    "provenance": 0, "progress": 0, "allocator": 0, "yamlconfig": 0, "layers": 0,
    "checks": 0, "colors": 0, "ngff": 0, "startup": 0, "lazy": 0,
    "io": 1, "models": 1, "synth": 1, "metrics": 1, "cluster": 1,
    "inference": 2, "crf": 2, "instances": 2, "postprocess": 2, "train": 2, "preview": 2,
    "bench": 2,
    "workflow": 3, "stages": 3,
    "cli": 4,
}


@dataclass(frozen=True)
class Import:
    """One import of a volseg module by another (``line`` in ``source``'s file)."""

    source: str
    target: str
    line: int


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def modules(root: Path) -> dict[str, Path]:
    """Return ``{dotted name: file}`` of every module below the package folder ``root``."""
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports(root: Path) -> Iterator[Import]:
    """Yield every import of one module of the package ``root`` by another."""
    names = modules(root)
    for module, path in names.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(module, is_package, node)
                # ``from volseg.x import y`` imports the module volseg.x.y when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base
                           for a in node.names]
            for target in targets:
                while target and target not in names:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    yield Import(module, target, node.lineno)


def layer(module: str) -> int:
    """Return the layer of a dotted ``volseg`` module name (see :data:`LAYERS`)."""
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    return LAYERS[parts[1]]


def upward(root: Path) -> list[Import]:
    """Return the imports that run from a lower layer to a higher one."""
    return [i for i in imports(root) if layer(i.target) > layer(i.source)]


def cycles(root: Path) -> list[list[str]]:
    """Return the import cycles: strongly connected groups of more than one module.

    A package importing its own submodules (``volseg.x`` -> ``volseg.x.y``) is left
    out: re-exporting from ``__init__`` is how a package presents its API.
    """
    graph: dict[str, set[str]] = {m: set() for m in modules(root)}
    for imp in imports(root):
        if not imp.target.startswith(imp.source + "."):
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)
