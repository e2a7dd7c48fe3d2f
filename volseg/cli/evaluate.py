"""``volseg evaluate``: compare a segmentation with ground truth and write a report.

Examples::

    volseg evaluate --prediction crf.ome.zarr \\
        --truth image.ome.zarr/labels/truth --probabilities prediction.ome.zarr \\
        --report report
    volseg evaluate --prediction instances.ome.zarr \\
        --truth image.ome.zarr/labels/cells --instances --report report-instances

Inputs are anything :func:`volseg.io.open_volume` opens.  All metrics are computed
exactly in one out-of-core pass; see ``docs/metrics.md`` for the report layout.
"""

from __future__ import annotations

import argparse

from volseg.cli import _common
from volseg.cli._options import add_options, parse_options
from volseg.errors import InputError
from volseg.metrics.options import EvaluateOptions

NAME = "evaluate"
HELP = "compare a segmentation with ground truth: exact metrics, tables and plots"
ORDER = 70


def _ignore_label(text: str) -> int | None:
    """``argparse`` type: an integer, or ``none``."""
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or 'none'") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options."""
    parser.add_argument(
        "--prediction", required=True, metavar="P",
        help="predicted labels (e.g. crf.ome.zarr)")
    parser.add_argument(
        "--truth", required=True, metavar="T",
        help="ground-truth labels (e.g. image.ome.zarr/labels/truth); may be sparse, with "
             "the ignore label on unannotated voxels")
    parser.add_argument(
        "--probabilities", metavar="Q",
        help="class probabilities (c, z, y, x), e.g. prediction.ome.zarr: adds per-class "
             "average precision and PR curves")
    parser.add_argument(
        "--instances", nargs="*", metavar=("PRED", "TRUTH"),
        help="alone: P and T are instance labels (VOI, adapted Rand, CREMI, object "
             "matching); with PRED TRUTH: add this instance evaluation to the semantic one")
    parser.add_argument(
        "--report", required=True, metavar="DIR",
        help="report directory: metrics.json, metrics.md, confusion.png, pr_curves.png")
    add_options(parser, EvaluateOptions, types_={"ignore_label": _ignore_label},
                metavars={"classes": "NAME", "z_range": ("START", "STOP"),
                          "ignore_label": "L", "zero_division": "{0,1,nan}"})
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing report (default: refuse)")


def run(args: argparse.Namespace) -> int:
    """Run ``volseg evaluate``."""
    from volseg.metrics.pipeline import EvaluationInputs, run_evaluation

    instances_only = args.instances is not None and len(args.instances) == 0
    pair: tuple[str, str] | None = None
    if args.instances:
        if len(args.instances) != 2:
            raise InputError(
                "--instances takes no value (P and T are instance labels) or two values "
                f"PRED TRUTH, got {len(args.instances)}"
            )
        pair = (args.instances[0], args.instances[1])
    if instances_only and args.probabilities:
        raise InputError("--probabilities applies to semantic labels, not to --instances alone")
    options = parse_options(EvaluateOptions, args)
    if instances_only:
        inputs = EvaluationInputs(instances=(args.prediction, args.truth))
    else:
        inputs = EvaluationInputs(prediction=args.prediction, truth=args.truth,
                                  probabilities=args.probabilities, instances=pair)
    record = _common.output_attrs(NAME, [], args, options)["volseg"]
    run_evaluation(inputs, args.report, options, overwrite=args.overwrite, record=record)
    print(f"report written to {args.report}")
    return 0
