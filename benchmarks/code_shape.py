"""The shape of the code: the figures issue #18 tracks, measured on a source tree.

Prints and writes ``benchmarks/results/code_shape.json``:

* the public function (or method) of ``volseg`` with the most parameters, and that count
  (``self``/``cls`` not counted; private names and private modules left out);
* the largest workflow stage module (``volseg/stages/*.py``), in lines;
* the number of ``type: ignore`` comments in ``volseg/``;
* the import cycles and the upward imports (see :mod:`volseg.layers`);
* the pairs ``duplicates`` lists for ``volseg/`` (when that tool is on PATH).

Usage: ``python benchmarks/code_shape.py [--root DIR] [--out NAME]`` (``--root``: a
checkout whose ``volseg/`` to measure, default this one).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from volseg import layers  # noqa: E402


def widest_functions(package: Path, most: int = 5) -> list[tuple[int, str]]:
    """Return the ``most`` public functions with the most parameters, widest first."""
    found: list[tuple[int, str]] = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        if any(p.startswith("_") and p != "__init__.py" for p in rel.parts):
            continue

        def walk(node: ast.AST, prefix: str, rel: Path = rel) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                    walk(child, f"{prefix}{child.name}.")
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if child.name.startswith("_") and child.name != "__init__":
                        continue
                    a = child.args
                    params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
                    params = [p for p in params if p.arg not in ("self", "cls")]
                    n = len(params) + (a.vararg is not None) + (a.kwarg is not None)
                    found.append((n, f"{rel}:{child.lineno} {prefix}{child.name}"))

        walk(ast.parse(path.read_text()), "")
    return sorted(found, key=lambda t: (-t[0], t[1]))[:most]


def stage_lines(package: Path) -> list[tuple[int, str]]:
    """Return ``(lines, file)`` of every stage module, largest first."""
    out = [(len(p.read_text().splitlines()), str(p.relative_to(package.parent)))
           for p in sorted((package / "stages").glob("*.py")) if p.name != "__init__.py"]
    return sorted(out, reverse=True)


def type_ignores(package: Path) -> int:
    """Count ``type: ignore`` comments."""
    return sum(len(re.findall(r"type:\s*ignore", p.read_text()))
               for p in package.rglob("*.py"))


def duplicate_pairs(package: Path) -> tuple[int | None, str]:
    """Return the pair count ``duplicates`` gives for ``package`` and its first line."""
    tool = shutil.which("duplicates")
    if tool is None:
        return None, "duplicates not on PATH"
    out = subprocess.run([tool, "--repo", str(package), "--seconds", "120"],
                         capture_output=True, text=True, check=False).stdout
    first = out.splitlines()[0] if out else ""
    match = re.match(r"(\d+) pairs?", first)
    return (int(match.group(1)) if match else 0), first


def measure(root: Path) -> dict[str, Any]:
    """Return the figures of the checkout ``root``."""
    package = root / "volseg"
    widest = widest_functions(package)
    stages = stage_lines(package)
    cyc = layers.cycles(package)
    up = layers.upward(package)
    pairs, dup_line = duplicate_pairs(package)
    return {
        "root": str(root),
        "widest_public_function": {"parameters": widest[0][0], "where": widest[0][1]},
        "widest_five": [{"parameters": n, "where": w} for n, w in widest],
        "biggest_stage_module": {"lines": stages[0][0], "file": stages[0][1]},
        "type_ignores": type_ignores(package),
        "import_cycles": len(cyc),
        "import_cycle_groups": cyc,
        "upward_imports": len(up),
        "upward_import_list": [f"{i.source} -> {i.target} (line {i.line})" for i in up],
        "duplicate_pairs": pairs,
        "duplicates_summary": dup_line,
    }


def main() -> None:
    """Measure and print; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--out", default="code_shape")
    args = parser.parse_args()
    figures = measure(args.root.resolve())
    print(json.dumps(figures, indent=2))
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / f"{args.out}.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
