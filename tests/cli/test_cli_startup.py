"""Start-up of the command line: one command imports one command module; ``--help`` and
``--version`` import no heavy library; allocator."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from volseg.allocator import tune_for_blocks

PROBE = """
import sys
from volseg.cli import main
try:
    main(["info", "--help"])
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m.startswith("volseg.cli.")))
"""


def test_a_command_imports_only_its_own_module() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    commands = {m for m in ast.literal_eval(out) if not m.startswith("volseg.cli._")}
    assert commands == {"volseg.cli.info"}


HEAVY = ("torch", "dask", "distributed", "monai", "zarr", "scipy", "matplotlib")

HELP_PROBE = """
import contextlib, io, sys
from volseg.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
assert out.getvalue().strip(), "no help printed"
print(sorted({m.split(".")[0] for m in sys.modules}))
"""


def _commands() -> list[str]:
    from volseg.cli import _command_names

    return [name.replace("_", "-") for name in _command_names()]


@pytest.mark.parametrize("argv", [["--help"], ["--version"]]
                         + [[name, "--help"] for name in _commands()],
                         ids=lambda argv: " ".join(argv))
def test_help_and_version_import_no_heavy_library(argv: list[str]) -> None:
    out = subprocess.run([sys.executable, "-c", HELP_PROBE, *argv], capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    imported = set(ast.literal_eval(out))
    assert "volseg" in imported
    assert not imported & set(HEAVY), f"volseg {' '.join(argv)} imported {imported & set(HEAVY)}"


def test_lazy_package_exports_resolve_like_eager_imports() -> None:
    probe = """
import sys
import volseg.metrics, volseg.io
assert "dask" not in sys.modules
import volseg.metrics.evaluate  # the module named like the function it exports
from volseg.metrics import evaluate
from volseg.io import VolumeMeta, omezarr, open_volume
print(callable(evaluate) and not hasattr(evaluate, "__path__"), evaluate.__module__,
      open_volume.__module__, omezarr.__name__, "open_volume" in dir(volseg.io))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "volseg.metrics.evaluate", "volseg.io.readers", "volseg.io.omezarr",
                   "True"]
    import volseg.io

    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        volseg.io.nonsense  # noqa: B018


def test_help_and_unknown_commands_still_list_every_command() -> None:
    res = subprocess.run([sys.executable, "-m", "volseg", "nonsense"], capture_output=True,
                         text=True)
    assert res.returncode == 2
    for name in ("run", "convert", "predict", "train", "crf", "evaluate"):
        assert f"'{name}'" in res.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt only")
def test_allocator_tuning_applies_on_glibc() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert tune_for_blocks() is True
