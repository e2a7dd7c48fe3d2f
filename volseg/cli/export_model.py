"""``volseg export-model``: a trained model as a bioimage.io model package.

Writes ``OUT.zip`` (bioimage.io spec 0.5) with TorchScript and ONNX weights, test
tensors computed by volseg, a README from the model's spec and training record and
a cover; other tools (ilastik, deepImageJ, BiaPy, bioimageio.core) run it, and so
does ``volseg predict --model OUT.zip``.  See docs/models.md.
"""

from __future__ import annotations

import argparse
import warnings

from volseg.cli import _common

NAME = "export-model"
HELP = "write a trained model as a bioimage.io model package (ONNX + TorchScript weights)"
ORDER = 45


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``export-model``'s arguments."""
    parser.add_argument("model", metavar="MODEL.safetensors", help="trained volseg model file")
    parser.add_argument("output", metavar="OUT.zip", help="the package to write")
    parser.add_argument("--name", help="package name (default: architecture and classes)")
    parser.add_argument("--description", help="one-line description (default generated)")
    parser.add_argument("--author", action="append", default=[], metavar="'NAME[; AFFIL]'",
                        help="an author (repeat for several)")
    parser.add_argument("--license", metavar="SPDX",
                        help="licence of the weights, an SPDX id such as CC-BY-4.0 or MIT")
    parser.add_argument("--cite", nargs=2, action="append", default=[],
                        metavar=("TEXT", "DOI_OR_URL"),
                        help="a citation: text and a DOI (10.xxxx/...) or URL (repeatable)")
    parser.add_argument("--cover", action="append", default=[], metavar="PNG",
                        help="cover image, e.g. a workflow's preview/xy.png (repeatable; "
                             "default: made from the test tensors)")
    parser.add_argument("--sample", metavar="IMAGE",
                        help="image the test input is cut from (default: the training "
                             "image recorded in the model, else a synthetic one)")
    parser.add_argument("--weights", nargs="+", choices=("torchscript", "onnx"),
                        default=["torchscript", "onnx"], help="formats to write (default both)")
    parser.add_argument("--state-dict", action="store_true",
                        help="also write pytorch_state_dict weights: a PICKLE, which volseg "
                             "never loads (for consumers that need it)")
    _common.add_overwrite(parser)


def run(args: argparse.Namespace) -> int:
    """Export the model and print what was written; return the exit status."""
    from volseg.inference.export import ExportOptions, export_model

    options = ExportOptions(
        name=args.name, description=args.description, authors=tuple(args.author),
        license=args.license, cite=tuple((t, r) for t, r in args.cite),
        covers=tuple(args.cover), sample=args.sample, weights=tuple(args.weights),
        state_dict=args.state_dict, overwrite=args.overwrite,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = export_model(args.model, args.output, options)
    for warning in caught:
        if "--state-dict" in str(warning.message):
            print(f"volseg: warning: {warning.message}")
    print(f"wrote {result.output} (bioimage.io model, weights: {', '.join(result.weights)})")
    print(f"  test input {_common.format_shape(result.test_input_shape)}, test output "
          f"{_common.format_shape(result.test_output_shape)}")
    if not args.license:
        print("  no licence given: pass --license (e.g. CC-BY-4.0) before sharing it")
    return 0
