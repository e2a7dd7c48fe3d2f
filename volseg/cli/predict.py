"""``volseg predict``: segment a volume with a trained model, block by block.

Reads the image (usually ``image.ome.zarr``), maps the network over overlapping
blocks with Dask and blends the patches as MONAI's sliding window does (each patch
evaluated once), then writes ``OUTPUT/labels/semantic`` (uint8 class ids) and, with
``--probabilities``, the class probabilities as the multiscale image ``OUTPUT``
(axes ``c, z, y, x``) — both from one Dask graph.  An interrupted run resumes where
it stopped; a finished output is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse

from volseg.cli import _common
from volseg.inference.pipeline import PROBABILITY_DTYPES, run_predict
from volseg.inference.predictor import PRECISIONS
from volseg.inference.weights import BLENDS

NAME = "predict"
HELP = "segment a volume with a trained model (labels and class probabilities as OME-Zarr)"
ORDER = 40


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be in [0, 1)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``predict``'s arguments."""
    parser.add_argument("--model", required=True, metavar="M.safetensors|PACKAGE.zip",
                        help="trained model file (weights + spec), or a bioimage.io model "
                             "package (.zip, rdf.yaml) with ONNX or TorchScript weights")
    parser.add_argument("--input", required=True, metavar="IMAGE.ome.zarr",
                        help="input volume (OME-Zarr or any format `volseg info` reads)")
    parser.add_argument("--output", required=True, metavar="OUT.ome.zarr",
                        help="output group: OUT/labels/semantic and the probabilities")
    parser.add_argument("--patch", nargs=3, type=_common.positive_int, metavar=("Z", "Y", "X"),
                        help="patch (output window) size (default: the model's)")
    parser.add_argument("--overlap", type=_fraction, default=0.25, metavar="F",
                        help="overlap of neighbouring patches, in [0, 1) (default 0.25)")
    parser.add_argument("--blend", choices=BLENDS, default="gaussian",
                        help="patch blending weights (default gaussian, as MONAI)")
    parser.add_argument("--batch-size", type=_common.positive_int, default=4, metavar="N",
                        help="patches per forward pass (default 4)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs (default auto: CUDA when present)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="autocast precision on CUDA (the CPU always runs fp32)")
    parser.add_argument("--probabilities", choices=PROBABILITY_DTYPES, default="none",
                        help="also write class probabilities: uint8 = round(255 p), "
                             "float16 or float32 (default none)")
    parser.add_argument("--tta", action="store_true",
                        help="average the logits over flips (8 in 3-D, 4 in-plane in 2.5-D)")
    parser.add_argument("--block", nargs=3, type=_common.positive_int, metavar=("Z", "Y", "X"),
                        help="block (= output chunk) size (default: two patch strides per axis; "
                             "multiples of the stride need the least memory)")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                        help="how the network runs: torch (TorchScript for packages) or "
                             "onnx (onnxruntime, CPU); default auto: torch, a package's "
                             "TorchScript weights when present")
    parser.add_argument("--no-pyramid", action="store_true",
                        help="write level 0 only (no downsampled levels)")
    _common.add_overwrite(parser)


def run(args: argparse.Namespace) -> int:
    """Predict, write the outputs and print a short summary; return the exit status."""
    attrs = _common.output_attrs(NAME, [], args)
    result = run_predict(
        args.model, args.input, args.output, patch_size=args.patch, overlap=args.overlap,
        blend=args.blend, batch_size=args.batch_size, device=args.device,
        precision=args.precision, probabilities=args.probabilities, tta=args.tta,
        block_size=args.block, overwrite=args.overwrite, attrs=attrs,
        pyramid=not args.no_pyramid, backend=args.backend,
    )
    resumed = ""
    if result.skipped_blocks:
        resumed = (f" (resumed: {result.skipped_blocks} of {result.total_blocks} blocks were "
                   f"done, {result.computed_blocks} recomputed)")
    print(f"wrote {result.labels}{resumed}")
    if result.probabilities is not None:
        print(f"  probabilities ({args.probabilities}) in {result.probabilities}")
    print(f"  shape {_common.format_shape(result.shape)}, {len(result.classes)} classes "
          f"({', '.join(result.classes)}), patch {_common.format_shape(result.patch_size)}")
    print(f"  {result.computed_blocks} of {result.total_blocks} blocks of "
          f"{_common.format_shape(result.block_size)} computed in "
          f"{result.block_seconds:.1f} s ({result.voxels_per_second:,.0f} voxels/s)")
    print(f"  network loaded in {result.model_seconds:.1f} s, pyramids in "
          f"{result.pyramid_seconds:.1f} s, {result.seconds:.1f} s in all")
    return 0
