"""``volseg synth KIND OUTPUT --shape Z Y X``: write a synthetic phantom with ground truth.

Kinds: ``fibsem`` (FIB-SEM neuropil, seven classes, sparse annotation on
``--annotated-slices`` z-slices), ``cryoet`` (low-SNR tomogram with a membrane mask;
``OUTPUT`` ending ``.mrc`` writes the tomogram and ``<stem>_mask.mrc``) and ``em2d``
(a stack of independent micrographs with contamination blobs).  OME-Zarr outputs hold
the image plus ``labels/truth`` (and ``labels/annotation``).  The same seed gives the
same bytes whatever ``--chunks``.  Prints the class frequencies.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from volseg.cli import _common
from volseg.cli._options import add_options, parse_options
from volseg.synth.options import SynthOptions

if TYPE_CHECKING:
    from volseg.synth import Phantom
    from volseg.synth.pipeline import WriteResult

NAME = "synth"
HELP = "write a synthetic EM phantom (fibsem, cryoet, em2d) with ground truth"
ORDER = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``synth``'s arguments."""
    add_options(parser, SynthOptions, positional=("kind",), exclude=("params",),
                types_={"blur": float}, metavars={"annotated_slices": "K"})
    parser.add_argument("output", help="output OME-Zarr group (e.g. image.ome.zarr), or a "
                                       ".mrc file for cryoet")
    _common.add_overwrite(parser)


def run(args: argparse.Namespace) -> int:
    """Make the phantom, write it and print the class frequencies."""
    from volseg.synth.pipeline import check_space, make_phantom, write_phantom

    options = parse_options(SynthOptions, args, kind=args.kind)
    check_space(options, args.output)
    phantom = make_phantom(options)
    provenance = _common.output_attrs(NAME, ["kind", "output"], args, options)["volseg"]
    result = write_phantom(phantom, args.output, provenance=provenance,
                           overwrite=args.overwrite, if_complete="error", ngff=options.ngff)
    print_report(phantom, result)
    return 0


def print_report(phantom: Phantom, result: WriteResult) -> None:
    """Print what was written and the class-frequency table."""
    from rich.console import Console
    from rich.table import Table

    from volseg.synth.pipeline import summary

    info = summary(phantom, result)
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    console.print(f"wrote {', '.join(result.outputs)} in {result.seconds:.1f} s")
    console.print(
        f"  {info['kind']} phantom, shape {_common.format_shape(phantom.image.shape)} "
        f"{phantom.image.dtype}, voxel size {_common.format_voxel(phantom.voxel_size)}"
        + (f", annotated z-slices {list(phantom.annotated_slices)}"
           if phantom.annotated_slices else ""))
    table = Table(title="class frequencies (truth)", title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("class")
    table.add_column("voxels", justify="right")
    table.add_column("%", justify="right")
    for i, name in enumerate(phantom.class_names):
        table.add_row(str(i), name, f"{info['class_frequencies'].get(name, 0):,}",
                      f"{info['class_percent'].get(name, 0.0):.2f}")
    console.print(table)
