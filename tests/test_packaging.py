"""environment.yml (conda route) and pyproject.toml (pip route) list the same packages."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI names
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name_and_spec(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert match, requirement
    name = match.group(1).lower().replace("_", "-")
    return CONDA_TO_PYPI.get(name, name), match.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(_name_and_spec(r) for r in data["project"]["dependencies"])


def _extras() -> dict[str, str]:
    """Packages of the optional extras (not ``dev``), which environment.yml may list."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(_name_and_spec(r) for extra, reqs in data["project"]["optional-dependencies"]
                .items() if extra != "dev" for r in reqs)


def _environment() -> dict[str, str]:
    data = yaml.safe_load((ROOT / "environment.yml").read_text())
    found: dict[str, str] = {}
    for dep in data["dependencies"]:
        for requirement in dep["pip"] if isinstance(dep, dict) else [dep]:
            name, spec = _name_and_spec(requirement)
            if name not in ("python", "pip"):
                found[name] = spec
    return found


def test_environment_and_pyproject_list_the_same_packages() -> None:
    pyproject, environment, extras = _pyproject(), _environment(), _extras()
    assert set(pyproject) <= set(environment), (
        f"only in pyproject: {sorted(set(pyproject) - set(environment))}")
    stray = set(environment) - set(pyproject) - set(extras)
    assert not stray, f"only in environment.yml: {sorted(stray)}"


def test_versions_agree_and_torch_is_pinned() -> None:
    pyproject, environment = _pyproject(), _environment()
    for name, spec in {**_extras(), **pyproject}.items():
        if name in environment:
            assert environment[name] == spec, f"{name}: {spec!r} vs {environment[name]!r}"
    assert pyproject["torch"] == "==2.13.0"


def test_console_script_points_at_the_cli() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["volseg"] == "volseg.cli:main"
