"""What the commands import: nothing heavy until their arguments are parsed, and the
predict path never imports ``monai`` (its package import loads every subpackage)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "dask", "distributed", "monai", "zarr", "scipy", "matplotlib")

PARSE_PROBE = """
import sys
from volseg.cli import _requested_command, build_parser
argv = sys.argv[1:]
args = build_parser(_requested_command(argv)).parse_args(argv)
assert args.command
print(sorted({m.split(".")[0] for m in sys.modules}))
"""

COMMANDS = [
    ["predict", "--model", "m.safetensors", "--input", "i.ome.zarr", "--output", "o.ome.zarr",
     "--overlap", "0.5", "--block", "64", "64", "64", "--ngff", "0.4"],
    ["crf", "--probabilities", "p.ome.zarr", "--image", "i.ome.zarr", "--output", "c.ome.zarr",
     "--iterations", "3", "--processes", "2"],
    ["instances", "--labels", "l.ome.zarr", "--output", "n.ome.zarr", "--classes", "2"],
    ["evaluate", "--prediction", "p.ome.zarr", "--truth", "t.ome.zarr", "--report", "r"],
    ["convert", "in.tif", "out.ome.zarr", "--voxel-size", "5", "5", "5"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: argv[0])
def test_parsing_a_command_line_imports_no_heavy_library(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", PARSE_PROBE, *argv], capture_output=True,
                          text=True)
    if done.returncode == 2 and "error" in done.stderr:  # the command's flags changed
        pytest.fail(f"probe command line no longer parses: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    imported = set(ast.literal_eval(done.stdout.strip().splitlines()[-1]))
    assert not imported & set(HEAVY), f"parsing {argv[0]} imported {imported & set(HEAVY)}"


RUN_PROBE = """
import sys
from volseg.cli import main
status = main(sys.argv[1:])
print(status, sorted({m.split(".")[0] for m in sys.modules}))
"""


def test_predict_runs_without_importing_monai(tmp_path: Path) -> None:
    """The default network (volseg.models.unet) and the Gaussian importance map are
    built without MONAI: a whole ``volseg predict`` never imports it."""
    probe = """
import numpy as np, sys, torch
from volseg.io.omezarr import write_image
from volseg.models import ModelSpec, build_model, save_model
d = sys.argv[1]
write_image(np.random.default_rng(0).integers(0, 255, (8, 32, 32), dtype=np.uint8),
            d + "/image.ome.zarr", voxel_size=(8, 8, 8))
spec = ModelSpec(architecture="unet3d", params={"widths": [4, 8], "num_res_units": 2},
                 classes=("a", "b"), patch_size=(8, 16, 16))
save_model(build_model(spec).eval(), spec, d + "/model.safetensors")
print("monai" in sys.modules)
"""
    made = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True,
                          text=True, check=True).stdout.split()
    assert made[-1] == "False"
    argv = ["predict", "--model", str(tmp_path / "model.safetensors"), "--input",
            str(tmp_path / "image.ome.zarr"), "--output", str(tmp_path / "out.ome.zarr"),
            "--device", "cpu"]
    done = subprocess.run([sys.executable, "-c", RUN_PROBE, *argv], capture_output=True,
                          text=True, check=True)
    status, imported = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "0"
    modules = set(ast.literal_eval(imported))
    assert "torch" in modules and "monai" not in modules


def test_a_command_line_process_imports_dask_without_xarray(tmp_path: Path) -> None:
    """``volseg`` as a process of its own hides xarray (and pandas) from dask's optional
    import; ``import xarray`` still works afterwards."""
    probe = """
import sys
import numpy as np
from volseg.cli import main
sys.argv = ["volseg", "info", sys.argv[1]]
np.save(sys.argv[2], np.zeros((4, 8, 8), np.uint8))
status = main()
hidden = "xarray" not in sys.modules and "pandas" not in sys.modules
import dask.array.core
xr_hook = dask.array.core.xr is None
import xarray  # noqa: F401  works again
print(status, hidden, xr_hook, "xarray" in sys.modules)
"""
    npy = tmp_path / "v.npy"
    done = subprocess.run([sys.executable, "-c", probe, str(npy), str(npy)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.split()[-4:] == ["0", "True", "True", "True"], done.stdout + done.stderr
