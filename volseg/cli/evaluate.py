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
import math
import shlex
from pathlib import Path
from typing import Any

from volseg.cli import _common
from volseg.errors import InputError
from volseg.io import omezarr, open_volume
from volseg.metrics.connectomics import DEFAULT_IGNORE
from volseg.metrics.evaluate import evaluate
from volseg.metrics.report import check_report_dir, print_summary, report_meta, write_report
from volseg.provenance import provenance

NAME = "evaluate"
HELP = "compare a segmentation with ground truth: exact metrics, tables and plots"
ORDER = 70

DEFAULT_IGNORE_LABEL = 255


def _ignore_label(text: str) -> int | None:
    """``argparse`` type: a non-negative integer, or ``none``."""
    return None if text.lower() == "none" else _common.non_negative_int(text)


def _zero_division(text: str) -> float:
    if text not in ("0", "1", "nan"):
        raise argparse.ArgumentTypeError(f"{text!r} must be 0, 1 or nan")
    return float(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options."""
    parser.add_argument(
        "--prediction",
        required=True,
        metavar="P",
        help="predicted labels (e.g. crf.ome.zarr)",
    )
    parser.add_argument(
        "--truth",
        required=True,
        metavar="T",
        help="ground-truth labels (e.g. image.ome.zarr/labels/truth); may be "
        "sparse, with the ignore label on unannotated voxels",
    )
    parser.add_argument(
        "--probabilities",
        metavar="Q",
        help="class probabilities (c, z, y, x), e.g. prediction.ome.zarr: adds "
        "per-class average precision and PR curves",
    )
    parser.add_argument(
        "--ignore-label",
        type=_ignore_label,
        default=DEFAULT_IGNORE_LABEL,
        metavar="L",
        help="truth id of unannotated voxels, left out of semantic metrics "
        f"(default {DEFAULT_IGNORE_LABEL}; 'none' evaluates every voxel)",
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        metavar="NAME",
        help="class names in id order (default: the labels' volseg.class_names "
        "attribute, else class_0, class_1, ...)",
    )
    parser.add_argument(
        "--instances",
        nargs="*",
        metavar=("PRED", "TRUTH"),
        help="alone: P and T are instance labels (VOI, adapted Rand, CREMI, "
        "object matching); with PRED TRUTH: add this instance evaluation "
        "to the semantic one",
    )
    parser.add_argument(
        "--zero-division",
        type=_zero_division,
        default=0.0,
        metavar="{0,1,nan}",
        help="score of a class whose precision/recall/F1/IoU denominator is "
        "zero (default 0, as scikit-learn)",
    )
    parser.add_argument(
        "--z-range", type=int, nargs=2, metavar=("START", "STOP"),
        help="evaluate only sections START <= z < STOP (e.g. the held-out part of a volume)",
    )
    parser.add_argument(
        "--report",
        required=True,
        metavar="DIR",
        help="report directory: metrics.json, metrics.md, confusion.png, pr_curves.png",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing report (default: refuse)"
    )


def _names_in(attrs: Any) -> list[str] | None:
    """Class names in one attribute mapping, under the keys volseg's stages write."""
    if not isinstance(attrs, dict):
        return None
    record = attrs.get("volseg")
    record = record if isinstance(record, dict) else {}
    predict = record.get("predict")
    predict = predict if isinstance(predict, dict) else {}
    for candidate in (record.get("class_names"), attrs.get("class_names"), predict.get("classes")):
        if isinstance(candidate, list) and candidate:
            return [str(n) for n in candidate]
    return None


def class_names_from_attrs(*attrs: Any) -> list[str] | None:
    """Return the class names recorded in label attributes, if any.

    Looks, in order, at ``volseg.class_names``, ``class_names`` and
    ``volseg.predict.classes`` (what the predict stage records) of each mapping.
    """
    for a in attrs:
        names = _names_in(a)
        if names:
            return names
    return None


def _parent_attrs(path: str) -> dict[str, Any]:
    """Attributes of the OME-Zarr image group holding a label group (``x.ome.zarr/labels/y``)."""
    parts = Path(path).parts
    if len(parts) >= 3 and parts[-2] == "labels":
        try:
            return omezarr.group_attrs(Path(*parts[:-2]))
        except Exception:  # not an OME-Zarr image group: no names from there
            return {}
    return {}


def _open_labels(path: str, what: str) -> tuple[Any, dict[str, Any]]:
    arr, meta = open_volume(path)
    if arr.ndim != 3:
        raise InputError(f"{path}: {what} must be a label volume (z, y, x), got shape {arr.shape}")
    return arr, meta.attrs


def _crop_z(array: Any, z_range: tuple[int, int] | None, path: str) -> Any:
    """Keep sections ``[start, stop)`` of the z axis (the second axis of (c, z, y, x))."""
    if z_range is None:
        return array
    start, stop = z_range
    depth = array.shape[-3]
    if not 0 <= start < stop <= depth:
        raise InputError(f"{path}: z range [{start}, {stop}) is outside its {depth} sections; "
                         f"give 0 <= START < STOP <= {depth}")
    return array[..., start:stop, :, :]


def run_evaluation(
    *,
    prediction: str,
    truth: str,
    report: str,
    probabilities: str | None = None,
    ignore_label: int | None = DEFAULT_IGNORE_LABEL,
    classes: list[str] | None = None,
    instances: tuple[str, str] | None = None,
    instances_only: bool = False,
    zero_division: float = 0.0,
    overwrite: bool = False,
    record: dict[str, Any] | None = None,
    client: Any = None,
    quiet: bool = False,
    z_range: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Open the inputs, evaluate in one pass, write the report; return the metrics.

    ``z_range`` restricts every volume to sections ``[start, stop)`` (e.g. the held-out
    sections of a training volume).

    Shared by the CLI and the ``evaluate`` workflow stage.  With ``instances_only``
    the ``prediction``/``truth`` volumes are instance labels; otherwise they are
    semantic labels and ``instances`` optionally adds an instance evaluation.
    ``record`` is the provenance stored under ``meta.volseg`` (default: a fresh
    :func:`volseg.provenance.provenance`).
    """
    check_report_dir(report, overwrite=overwrite)  # fail before the long computation
    pred, pred_attrs = _open_labels(prediction, "the prediction")
    true, true_attrs = _open_labels(truth, "the truth")
    pred, true = _crop_z(pred, z_range, prediction), _crop_z(true, z_range, truth)
    inputs: dict[str, Any] = {"prediction": prediction, "truth": truth}
    if z_range is not None:
        inputs["z_range"] = list(z_range)
    semantic = None
    inst = None
    if instances_only:
        inputs = {"instances": inputs}
        inst = {"prediction": pred, "truth": true}
    else:
        names = classes or class_names_from_attrs(
            true_attrs, pred_attrs, _parent_attrs(truth), _parent_attrs(prediction)
        )
        semantic = {
            "prediction": pred, "truth": true, "ignore_label": ignore_label,
            "n_classes": len(names) if names else None, "probabilities": None,
        }  # fmt: skip
        classes = names
        if probabilities is not None:
            prob, _ = open_volume(probabilities)
            if prob.ndim != 4:
                raise InputError(
                    f"{probabilities}: probabilities must have a class axis (c, z, y, x), "
                    f"got shape {prob.shape}"
                )
            semantic["probabilities"] = _crop_z(prob, z_range, probabilities)
            inputs["probabilities"] = probabilities
        if instances is not None:
            ip, _ = _open_labels(instances[0], "the instance prediction")
            it, _ = _open_labels(instances[1], "the instance truth")
            inst = {"prediction": _crop_z(ip, z_range, instances[0]),
                    "truth": _crop_z(it, z_range, instances[1])}
            inputs["instances"] = {"prediction": instances[0], "truth": instances[1]}
    metrics = evaluate(
        semantic=semantic, instances=inst, class_names=classes,
        zero_division=zero_division, ignore_labels=DEFAULT_IGNORE, client=client,
    )  # fmt: skip
    metrics["meta"] = report_meta(
        inputs=inputs,
        semantic=semantic is not None,
        ignore_label=ignore_label,
        instance_ignore_labels=DEFAULT_IGNORE if inst is not None else None,
        provenance=record if record is not None else provenance(command="volseg evaluate"),
    )
    write_report(metrics, report, overwrite=overwrite)
    if not quiet:
        print_summary(metrics)
    return metrics


def _command_line(options: dict[str, Any]) -> str:
    """Rebuild the equivalent ``volseg evaluate`` command line from parsed options."""
    parts = ["volseg", NAME]
    for key, value in options.items():
        if key == "command" or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    """Run ``volseg evaluate``."""
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
    zero_division = args.zero_division
    config = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("debug",)}
    if isinstance(zero_division, float) and math.isnan(zero_division):
        config["zero_division"] = "nan"
    run_evaluation(
        prediction=args.prediction,
        truth=args.truth,
        report=args.report,
        probabilities=args.probabilities,
        ignore_label=args.ignore_label,
        classes=args.classes,
        instances=pair,
        instances_only=instances_only,
        zero_division=zero_division,
        overwrite=args.overwrite,
        record=provenance(command=_command_line(config), config=config),
        z_range=tuple(args.z_range) if args.z_range else None,
    )
    print(f"report written to {args.report}")
    return 0
