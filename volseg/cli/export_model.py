"""``volseg export-model``: a trained model as a bioimage.io model package.

Writes ``OUT.zip`` (bioimage.io spec 0.5) with TorchScript and ONNX weights, test
tensors computed by volseg, a README from the model's spec and training record and
a cover; other tools (ilastik, deepImageJ, BiaPy, bioimageio.core) run it, and so
does ``volseg predict --model OUT.zip``.  See docs/models.md.

The options are the fields of :class:`volseg.inference.package.PackageOptions` (the
``export_model`` workflow stage's too).
"""

from __future__ import annotations

import argparse
import warnings

from volseg.cli import _common
from volseg.cli._options import add_options, parse_options
from volseg.inference.options import WEIGHT_FORMATS, PackageOptions

NAME = "export-model"
HELP = "write a trained model as a bioimage.io model package (ONNX + TorchScript weights)"
ORDER = 45

#: Flags whose name is not ``--<field-name>``.
FLAGS = {"authors": ("--author",), "covers": ("--cover",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``export-model``'s arguments."""
    parser.add_argument("model", metavar="MODEL.safetensors", help="trained volseg model file")
    parser.add_argument("output", metavar="OUT.zip", help="the package to write")
    add_options(parser, PackageOptions, flags=FLAGS, exclude=("cite", "weights"))
    parser.add_argument("--cite", nargs=2, action="append", metavar=("TEXT", "DOI_OR_URL"),
                        default=argparse.SUPPRESS,
                        help="a citation: text and a DOI (10.xxxx/...) or URL (repeatable)")
    parser.add_argument("--weights", nargs="+", choices=WEIGHT_FORMATS,
                        default=argparse.SUPPRESS,
                        help="weight formats to write (default: torchscript onnx)")
    _common.add_overwrite(parser)


def run(args: argparse.Namespace) -> int:
    """Export the model and print what was written; return the exit status."""
    from volseg.inference.package import export_model
    from volseg.models.rdf import parse_cite

    if hasattr(args, "cite"):  # (text, reference) pairs -> citations
        args.cite = [parse_cite(text, ref) for text, ref in args.cite]
    options = parse_options(PackageOptions, args, flags=FLAGS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = export_model(args.model, args.output, options, overwrite=args.overwrite)
    for warning in caught:
        if "--state-dict" in str(warning.message):
            print(f"volseg: warning: {warning.message}")
    print(f"wrote {result.output} (bioimage.io model, weights: {', '.join(result.weights)})")
    print(f"  test input {_common.format_shape(result.test_input_shape)}, test output "
          f"{_common.format_shape(result.test_output_shape)}")
    if not options.license:
        print("  no licence given: pass --license (e.g. CC-BY-4.0) before sharing it")
    return 0
