"""Imports run one way: geometry -> io/models/synth/metrics -> inference/... -> stages -> cli."""

from __future__ import annotations

import textwrap
from pathlib import Path

import volseg
from volseg import layers

PACKAGE = Path(volseg.__file__).parent


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert parts <= set(layers.LAYERS), sorted(parts - set(layers.LAYERS))


def test_no_import_runs_up_the_layers() -> None:
    found = [f"{i.source} -> {i.target} (line {i.line})" for i in layers.upward(PACKAGE)]
    assert found == []


def test_no_import_cycles() -> None:
    assert layers.cycles(PACKAGE) == []


def test_the_scan_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    root = tmp_path / "volseg"
    (root / "io").mkdir(parents=True)
    (root / "cli").mkdir()
    for init in (root, root / "io", root / "cli"):
        (init / "__init__.py").write_text("")
    (root / "cli" / "run.py").write_text("from volseg.io import reader\n")
    (root / "io" / "reader.py").write_text(textwrap.dedent("""\
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from volseg.cli import run
        def f():
            from ..cli.run import x
        """))
    up = layers.upward(root)
    assert {(i.source, i.target) for i in up} == {("volseg.io.reader", "volseg.cli.run")}
    assert [i.line for i in up] == [3, 5]
    assert layers.cycles(root) == [["volseg.cli.run", "volseg.io.reader"]]
