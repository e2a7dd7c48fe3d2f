"""The shell examples of the README and the docs parse as printed: every ``volseg ...``
line of a ``bash`` block is parsed by the command's own argument parser (option names,
numbers of values, choices, required arguments), and the workflow ``--set`` keys exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from volseg.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(path: Path) -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every ``volseg`` command line in the file's bash blocks."""
    found = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("$ "):
                line = line[2:]
            if not line.startswith("volseg ") or "..." in line:  # ...: a placeholder
                continue
            found.append((f"{path.name}: {line}", shlex.split(line)[1:]))
    return found


EXAMPLES = [example for path in DOCS for example in _commands(path)]


def test_the_readme_has_examples_of_every_command() -> None:
    names = {argv[0] for where, argv in EXAMPLES if where.startswith("README")}
    assert {"run", "convert", "info", "synth", "train", "predict", "crf", "postprocess",
            "instances", "evaluate", "export-model", "bench"} <= names


@pytest.mark.parametrize("argv", [argv for _, argv in EXAMPLES],
                         ids=[where for where, _ in EXAMPLES])
def test_example_parses_as_printed(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser(argv[0].replace("-", "_"))
    parsers = [parser]
    for parent in parsers:  # as printed: no abbreviated option names either
        parent.allow_abbrev = False
        parsers += [p for action in parent._actions if action.choices
                    for p in (action.choices.values() if isinstance(action.choices, dict)
                              else ()) if isinstance(p, type(parser).__mro__[1])]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"volseg {shlex.join(argv)}: {capsys.readouterr().err.strip()} ({exc})")
    if argv[0] == "run":
        from volseg.workflow.schema import load_workflow

        workflow = ROOT / args.workflow
        if workflow.exists():  # the --set keys name existing config keys
            load_workflow(workflow, args.overrides)


def test_the_lucchi_labels_example_maps_mitochondria_to_a_class_id() -> None:
    lines = [argv for where, argv in EXAMPLES
             if where.startswith("README") and "training_groundtruth.tif" in where]
    assert lines and all("255=1" in argv for argv in lines)
