"""Start-up of the command line: one command imports one command module; allocator."""

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
