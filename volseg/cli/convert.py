"""``volseg convert INPUT OUTPUT.ome.zarr``: any readable volume to OME-Zarr.

Images (default) become a multiscale image (mean pyramid).  With ``--labels`` the
input is a label volume (integer ids) written as an NGFF label image with a mode
pyramid: ``--labels-of IMAGE.ome.zarr --name mito`` adds it to an existing image
(``IMAGE.ome.zarr/labels/mito``; no OUTPUT; the labels take the image's format),
while ``--labels`` with OUTPUT writes OUTPUT as a standalone label image.  ``--ngff``
chooses NGFF 0.5 (zarr v3, sharded; the default) or 0.4 (zarr v2).

An existing finished output is refused unless ``--overwrite``; a partially written
one (an interrupted conversion) is resumed.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from volseg.cli import _common
from volseg.cli._options import add_options, parse_options
from volseg.errors import InputError
from volseg.io.options import ConvertOptions

if TYPE_CHECKING:
    from volseg.io.convert import ConvertResult

NAME = "convert"
HELP = "convert MRC/TIFF/PNG slices/HDF5/NPY/Zarr/N5 volumes to OME-Zarr"
ORDER = 20


EXAMPLES = """examples:
  volseg convert stack.tif image.ome.zarr --voxel-size 5 5 5
  volseg convert tomo.mrc tomo.ome.zarr --chunks 32 128 128
  volseg convert data.h5 image.ome.zarr --dataset volumes/raw
  volseg convert truth.tif --labels-of image.ome.zarr --name truth
  volseg convert truth.tif truth.ome.zarr --labels          # a standalone label image
  volseg convert stack.tif image.ome.zarr --ngff 0.4        # zarr v2 for older tools

An existing finished output is refused unless --overwrite; an interrupted
conversion is resumed by rerunning the same command."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``convert``'s arguments."""
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("input", help="volume file or folder (MRC, TIFF, PNG slices, HDF5, "
                                      "NPY, Zarr, N5, OME-Zarr)")
    parser.add_argument("output", nargs="?",
                        help="output OME-Zarr group, e.g. image.ome.zarr (omit with "
                             "--labels-of)")
    add_options(parser, ConvertOptions, metavars={"dataset": "NAME"})
    parser.add_argument("--labels", action="store_true",
                        help="the input is a label volume: write an NGFF label image")
    parser.add_argument("--labels-of", metavar="IMAGE",
                        help="add the labels to this existing OME-Zarr image (implies --labels)")
    parser.add_argument("--name", default="labels",
                        help="name of the label image with --labels-of (default: labels)")
    parser.add_argument("--map", dest="values", action="append", default=[],
                        metavar="OLD=NEW", type=_value_pair,
                        help="labels: map a raw value to a class id, e.g. --map 255=1 "
                             "(repeatable; values not listed are kept)")
    _common.add_overwrite(parser)


def _value_pair(text: str) -> tuple[int, int]:
    """Parse ``OLD=NEW`` (two integers) for ``--map``."""
    try:
        old, new = (int(part) for part in text.split("="))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected OLD=NEW integers, e.g. 255=1, got {text!r}") from None
    return old, new


def run(args: argparse.Namespace) -> int:
    """Convert and print a short summary; return the exit status."""
    from volseg.checks import ignore_id_foreground
    from volseg.io.convert import convert_image, convert_label_image, convert_labels
    from volseg.io.location import as_path

    labels = bool(args.labels or args.labels_of)
    if args.values and not labels:
        raise InputError("--map applies to label volumes; add --labels or --labels-of IMAGE")
    if args.labels_of and args.output:
        raise InputError("give either OUTPUT or --labels-of IMAGE, not both")
    if not args.labels_of and not args.output:
        raise InputError("missing OUTPUT: give an output path such as image.ome.zarr")
    options = parse_options(ConvertOptions, args)
    attrs = _common.output_attrs(NAME, ["input", "output"], args, options)
    values = dict(args.values) or None
    if args.labels_of:
        image = as_path(args.labels_of)
        if not image.exists():
            raise InputError(f"{image} does not exist; convert the image first or drop "
                             f"--labels-of")
        result = convert_labels(args.input, image, args.name, options, values=values,
                                overwrite=args.overwrite, attrs=attrs)
    elif labels:
        result = convert_label_image(args.input, args.output, options, values=values,
                                     overwrite=args.overwrite, attrs=attrs)
    else:
        result = convert_image(args.input, args.output, options, overwrite=args.overwrite,
                               attrs=attrs)
    print(summary(result))
    warning = ignore_id_foreground(result.class_frequencies, name=str(result.output))
    if warning:
        print(f"volseg: warning: {warning}", file=sys.stderr)
    return 0


def summary(result: ConvertResult) -> str:
    """Return a short human-readable account of a conversion."""
    rate = result.nbytes / max(result.seconds, 1e-9) / 2**20
    resumed = ""
    if result.resumed:
        resumed = (f" (resumed: {result.report.skipped_blocks} of "
                   f"{result.report.total_blocks} blocks were already written)")
    voxel = _common.format_voxel(result.voxel_size)
    shards = ("" if result.shards is None
              else f" in shards of {_common.format_shape(result.shards)}")
    lines = [
        f"wrote {result.output} (NGFF {result.ngff}){resumed}",
        f"  shape {_common.format_shape(result.shape)} {result.dtype}, chunks "
        f"{_common.format_shape(result.chunks)}{shards}, voxel size {voxel}",
        f"  {result.levels} pyramid level(s), {_common.format_bytes(result.nbytes)} in "
        f"{result.seconds:.1f} s ({rate:.1f} MiB/s)",
    ]
    if result.voxel_size is None:
        lines.append("  note: the input has no voxel size; pass --voxel-size Z Y X (nm)")
    return "\n".join(lines)
