"""environment.yml (conda route) and pyproject.toml (pip route) list the same packages."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

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
        if name in environment and name != "torch":  # torch: below
            assert environment[name] == spec, f"{name}: {spec!r} vs {environment[name]!r}"
    # a range in the package (installable beside another torch), the pin in the set-up
    assert pyproject["torch"] == ">=2.6,<3"
    assert environment["torch"] == "==2.13.0"
    pin = "torch==2.13.0"
    assert pin in (ROOT / "Makefile").read_text() and pin in (ROOT / "README.md").read_text()
    assert Version("2.13.0") in SpecifierSet(pyproject["torch"])


def test_python_range_is_the_same_everywhere() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    spec = SpecifierSet(data["project"]["requires-python"])
    assert spec == SpecifierSet(_environment_python())
    assert [v for v in ("3.10", "3.11", "3.12", "3.13", "3.14") if Version(v) in spec] == [
        "3.11", "3.12"]
    classifiers = data["project"]["classifiers"]
    assert {f"Programming Language :: Python :: {v}" for v in ("3.11", "3.12")} <= set(
        classifiers)
    assert "Python 3.11–3.12" in (ROOT / "README.md").read_text()


def _environment_python() -> str:
    data = yaml.safe_load((ROOT / "environment.yml").read_text())
    (python,) = [d for d in data["dependencies"] if isinstance(d, str)
                 and d.startswith("python")]
    return python.removeprefix("python")


def test_test_only_packages_are_in_dev() -> None:
    runtime = _pyproject()
    for name in ("scikit-image", "scikit-learn", "ome-zarr", "ome-zarr-models", "pytest"):
        assert name not in runtime, name
    imported = set()
    for path in (ROOT / "volseg").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    assert not imported & {"skimage", "sklearn", "pytest"}


def _copy_project(dest: Path) -> Path:
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "workflows", dest / "workflows", ignore=ignore)
    shutil.copytree(ROOT / "volseg", dest / "volseg", symlinks=True, ignore=ignore)
    return dest


def test_the_wheel_ships_workflows_types_and_licence_without_metadata_warnings(
        tmp_path: Path) -> None:
    project = _copy_project(tmp_path / "src")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(project), "--no-deps",
         "--no-build-isolation", "-w", str(tmp_path / "dist"), "-v"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    log = res.stdout + res.stderr
    warnings = [line for line in log.splitlines() if re.search(r"warn", line, re.I)
                and "byte-compil" not in line]  # PYTHONDONTWRITEBYTECODE, not metadata
    assert not warnings, warnings
    (wheel,) = (tmp_path / "dist").glob("volseg-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = zf.read(meta).decode()
    assert {"volseg/py.typed", "volseg/workflows/demo.yaml",
            "volseg/workflows/lucchi.yaml"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: BSD-3-Clause" in metadata
    assert "Requires-Dist: torch<3,>=2.6" in metadata


def test_volseg_run_finds_the_packaged_demo_from_another_folder(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("demo", "demo.yaml", "workflows/demo.yaml"):
        res = subprocess.run([sys.executable, "-m", "volseg", "run", name, "--check"],
                             capture_output=True, text=True, cwd=tmp_path, env=env)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["name"] == "demo"
    # a file of that name in the current folder wins
    (tmp_path / "demo.yaml").write_text("name: mine\nsynth: {kind: em2d, shape: [1, 8, 8]}\n")
    res = subprocess.run([sys.executable, "-m", "volseg", "run", "demo.yaml", "--check"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0 and json.loads(res.stdout)["name"] == "mine"
    res = subprocess.run([sys.executable, "-m", "volseg", "run", "nonsense", "--check"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 2 and "packaged workflows: " in res.stderr
    assert "demo" in res.stderr and "Traceback" not in res.stderr


def test_console_script_points_at_the_cli() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["volseg"] == "volseg.cli:main"
