"""``volseg crf``: refine class probabilities with a blockwise dense CRF.

Reads the class probabilities (``prediction.ome.zarr``, axes ``c, z, y, x``, uint8
``q/255`` or float) and the image, runs a fully connected CRF (Gaussian smoothness
kernel + bilateral intensity kernel, widths in nm) block by block with a halo, and
writes ``OUTPUT`` as a label image (uint8 class ids, mode pyramid, class names and
colours; NGFF 0.5 with one shard per block unless ``--ngff 0.4``). An interrupted run
resumes; a finished output is refused unless ``--overwrite``.

The options are the fields of :class:`volseg.crf.pipeline.CRFOptions` (the ``crf``
workflow stage's too): one flag per field, with the field's default.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from volseg.cli import _common
from volseg.cli._options import add_options, parse_options
from volseg.crf.options import CRFOptions
from volseg.errors import ConfigError, InputError

NAME = "crf"
HELP = "refine class probabilities with a blockwise dense CRF (a label image)"
ORDER = 50


#: Flags whose name is not ``--<field-name>`` (the historical short names stay).
FLAGS = {
    "gaussian_sigma_nm": ("--gaussian-sigma", "--gaussian-sigma-nm"),
    "bilateral_sigma_nm": ("--bilateral-sigma", "--bilateral-sigma-nm"),
    "compatibility": ("--compat", "--compatibility"),
    "block_size": ("--block", "--block-size"),
    "memory_budget_mib": ("--memory-budget", "--memory-budget-mib"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``crf``'s arguments."""
    parser.add_argument("--probabilities", required=True, metavar="P.ome.zarr",
                        help="class probabilities (c, z, y, x), e.g. prediction.ome.zarr")
    parser.add_argument("--image", metavar="I.ome.zarr",
                        help="image for the bilateral term (needed unless "
                             "--bilateral-weight 0)")
    parser.add_argument("--output", required=True, metavar="O.ome.zarr",
                        help="output label image (OME-Zarr)")
    add_options(parser, CRFOptions, flags=FLAGS, types_={"compatibility": str},
                metavars={"compatibility": "WEIGHT|FILE.yaml"})
    _common.add_overwrite(parser)


def parse_compatibility(text: str) -> float | list[list[float]]:
    """Return a Potts weight from a number, or the matrix from a YAML file.

    The YAML file holds either a number, a list of rows, or a mapping with the key
    ``compatibility`` holding one of those (safe loading, data only).
    """
    try:
        return float(text)
    except ValueError:
        pass
    path = Path(text)
    if not path.is_file():
        raise InputError(f"--compat {text}: not a number and no such YAML file")
    try:
        data: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict):
        if set(data) != {"compatibility"}:
            raise ConfigError(f"{path}: expected one key 'compatibility', got {sorted(data)}")
        data = data["compatibility"]
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    if (isinstance(data, list) and data and all(isinstance(r, list) for r in data)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    for r in data for v in r)):
        return [[float(v) for v in row] for row in data]
    raise ConfigError(f"{path}: compatibility must be a number or a list of rows of numbers")


def run(args: argparse.Namespace) -> int:
    """Run the CRF and print a short summary; return the exit status."""
    from volseg.crf.pipeline import run_crf

    fixed = {}
    if hasattr(args, "compatibility"):  # a number, or a YAML file with the matrix
        fixed["compatibility"] = parse_compatibility(args.compatibility)
    options = parse_options(CRFOptions, args, flags=FLAGS, **fixed)
    attrs = _common.output_attrs(NAME, [], args, options)
    result = run_crf(args.probabilities, args.image, args.output, options,
                     overwrite=args.overwrite, attrs=attrs)
    info = result.to_dict()
    resumed = ""
    if info["resumed"]:
        resumed = f" (resumed: {info['skipped_blocks']} of {info['blocks']} blocks were done)"
    print(f"wrote {result.output}{resumed}")
    print(f"  shape {_common.format_shape(result.shape)}, {result.n_classes} classes, voxel "
          f"size {_common.format_voxel(result.voxel_size)}")
    print(f"  {info['blocks']} blocks of {_common.format_shape(result.block_size)} with halo "
          f"{_common.format_shape(result.halo)} (~{_common.format_bytes(result.block_bytes)} "
          f"per block) in {result.seconds:.1f} s")
    return 0
