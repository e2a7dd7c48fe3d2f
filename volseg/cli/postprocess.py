"""``volseg postprocess``: class probabilities to labels, with the anchors' post-processing.

Reads the class probabilities (``prediction.ome.zarr`` of ``volseg predict``, axes
``c, z, y, x``, uint8 ``q/255`` or float) and writes ``OUTPUT`` as a label image
(uint8 class ids, mode pyramid, class names and colours; NGFF 0.5 with one shard per
block unless ``--ngff 0.4``) after, in this order: a 3-D median filter of each class
probability (``--median-size 7``, or ``--median-size 1 5 5`` for anisotropic stacks),
the decision (``--threshold`` for two-class maps, else the argmax), small-object
removal (``--min-size``, counted over the whole volume) and hole filling
(``--fill-holes``).  With no flag the output is the plain argmax.  An interrupted run
resumes; a finished output is refused unless ``--overwrite``.

The options are the fields of :class:`volseg.postprocess.PostprocessOptions` (the
``postprocess`` workflow stage's too): one flag per field, with the field's default.
"""

from __future__ import annotations

import argparse
from typing import Any

from volseg.cli import _common
from volseg.cli._options import add_options, parse_options
from volseg.errors import ConfigError
from volseg.postprocess.options import PostprocessOptions

NAME = "postprocess"
HELP = "median filter, threshold, small objects and holes: probabilities to a label image"
ORDER = 55

FLAGS = {"block_size": ("--block", "--block-size")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``postprocess``' arguments."""
    parser.add_argument("probabilities", metavar="PROBABILITIES",
                        help="class probabilities (c, z, y, x), e.g. prediction.ome.zarr")
    parser.add_argument("-o", "--output", required=True, metavar="O.ome.zarr",
                        help="output label image (OME-Zarr)")
    parser.add_argument("--image", metavar="I.ome.zarr",
                        help="the image the labels belong to (for viewers; default: the "
                             "probabilities')")
    field = PostprocessOptions.model_fields["median_size"]
    parser.add_argument("--median-size", dest="median_size", nargs="+", type=int,
                        metavar="N", default=argparse.SUPPRESS,
                        help=f"{field.description} (default 0)")
    add_options(parser, PostprocessOptions, flags=FLAGS, exclude=("median_size",))
    _common.add_overwrite(parser)


def _median_size(values: list[int]) -> int | tuple[int, int, int]:
    if len(values) == 1:
        return values[0]
    if len(values) == 3:
        return (values[0], values[1], values[2])
    raise ConfigError(f"--median-size: give one edge or three (Z Y X), got {len(values)} "
                      f"values")


def run(args: argparse.Namespace) -> int:
    """Post-process and print a short summary; return the exit status."""
    from volseg.postprocess.pipeline import run_postprocess

    fixed: dict[str, Any] = {}
    if hasattr(args, "median_size"):
        fixed["median_size"] = args.median_size = _median_size(args.median_size)
    options = parse_options(PostprocessOptions, args, flags=FLAGS, **fixed)
    attrs = _common.output_attrs(NAME, ["probabilities"], args, options)
    result = run_postprocess(args.probabilities, args.output, options, image=args.image,
                             overwrite=args.overwrite, attrs=attrs)
    info = result.to_dict()
    resumed = ""
    if info["resumed"]:
        resumed = f" (resumed: {info['skipped_blocks']} of {info['blocks']} blocks were done)"
    print(f"wrote {result.output}{resumed}")
    print(f"  shape {_common.format_shape(result.shape)}, {result.n_classes} classes")
    print(f"  {info['blocks']} blocks of {_common.format_shape(result.block_size)} with halo "
          f"{_common.format_shape(result.halo)} in {result.seconds:.1f} s")
    return 0
