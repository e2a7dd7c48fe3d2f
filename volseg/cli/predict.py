"""``volseg predict``: segment a volume with a trained model, block by block.

Reads the image (usually ``image.ome.zarr``), maps the network over overlapping
blocks with Dask and blends the patches as MONAI's sliding window does (each patch
evaluated once), then writes the class probabilities as the multiscale image
``OUTPUT`` (axes ``c, z, y, x``, channels named after the classes) and its label
image ``OUTPUT/labels/semantic`` (uint8 class ids with class names and colours) —
both from one Dask graph; with ``--probabilities none`` ``OUTPUT`` is the label image
itself.  NGFF 0.5 (zarr v3, one shard per block) unless ``--ngff 0.4``.  An interrupted run
resumes where it stopped; a finished output is refused unless ``--overwrite``.

The options are the fields of :class:`volseg.inference.PredictOptions` (the ``predict``
workflow stage's too): one flag per field, with the field's default.
"""

from __future__ import annotations

import argparse

from volseg.cli import _common
from volseg.cli._options import add_options, parse_options
from volseg.inference.options import PredictOptions

NAME = "predict"
HELP = "segment a volume with a trained model (labels and class probabilities as OME-Zarr)"
ORDER = 40

#: Flags whose name is not ``--<field-name>``.
FLAGS = {"patch_size": ("--patch", "--patch-size"), "block_size": ("--block", "--block-size")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``predict``'s arguments."""
    parser.add_argument("--model", required=True, metavar="M.safetensors|PACKAGE.zip",
                        help="trained model file (weights + spec), or a bioimage.io model "
                             "package (.zip, rdf.yaml) with ONNX or TorchScript weights")
    parser.add_argument("--input", required=True, metavar="IMAGE.ome.zarr",
                        help="input volume (OME-Zarr or any format `volseg info` reads)")
    parser.add_argument("--output", required=True, metavar="OUT.ome.zarr",
                        help="output group: the probabilities with OUT/labels/semantic "
                             "(with --probabilities none: the label image)")
    add_options(parser, PredictOptions, flags=FLAGS)
    _common.add_overwrite(parser)


def run(args: argparse.Namespace) -> int:
    """Predict, write the outputs and print a short summary; return the exit status."""
    from volseg.inference.pipeline import run_predict

    options = parse_options(PredictOptions, args, flags=FLAGS)
    attrs = _common.output_attrs(NAME, [], args, options)
    result = run_predict(args.model, args.input, args.output, options,
                         overwrite=args.overwrite, attrs=attrs)
    resumed = ""
    if result.skipped_blocks:
        resumed = (f" (resumed: {result.skipped_blocks} of {result.total_blocks} blocks were "
                   f"done, {result.computed_blocks} recomputed)")
    print(f"wrote {result.labels}{resumed}")
    if result.probabilities is not None:
        print(f"  probabilities ({options.probabilities}) in {result.probabilities}")
    print(f"  shape {_common.format_shape(result.shape)}, {len(result.classes)} classes "
          f"({', '.join(result.classes)}), patch {_common.format_shape(result.patch_size)}")
    print(f"  {result.computed_blocks} of {result.total_blocks} blocks of "
          f"{_common.format_shape(result.block_size)} computed in "
          f"{result.block_seconds:.1f} s ({result.voxels_per_second:,.0f} voxels/s)")
    print(f"  network loaded in {result.model_seconds:.1f} s, pyramids in "
          f"{result.pyramid_seconds:.1f} s, {result.seconds:.1f} s in all")
    return 0
