"""Evaluation from files to a report: label volumes in, ``metrics.json`` and plots out.

:class:`EvaluateOptions` is the operation's one options object: :func:`run_evaluation`
takes it whole, the ``evaluate`` workflow stage's config is it plus the paths, and
``volseg evaluate``'s flags are generated from it.  The volumes to compare are named
by :class:`EvaluationInputs`.  All metrics are computed exactly in one out-of-core
pass (:func:`volseg.metrics.evaluate`); ``docs/metrics.md`` describes the report.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from volseg.checks import ignore_id_foreground
from volseg.errors import InputError
from volseg.io import omezarr, open_volume
from volseg.io.location import PathLike, as_path
from volseg.metrics.connectomics import DEFAULT_IGNORE
from volseg.metrics.evaluate import evaluate
from volseg.metrics.options import DEFAULT_IGNORE_LABEL, EvaluateOptions
from volseg.metrics.report import check_report_dir, print_summary, report_meta, write_report
from volseg.provenance import provenance

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DEFAULT_IGNORE_LABEL", "EvaluateOptions", "EvaluationInputs",
           "class_names_from_attrs", "run_evaluation"]

@dataclass(frozen=True)
class EvaluationInputs:
    """The volumes to compare (anything :func:`volseg.io.open_volume` opens).

    Attributes
    ----------
    prediction, truth
        Semantic label volumes; ``None`` evaluates only ``instances``.
    probabilities
        Class probabilities ``(c, z, y, x)`` for average precision and PR curves.
    instances
        ``(prediction, truth)`` instance label volumes (globally consistent ids,
        0 = background) for VOI, adapted Rand, CREMI and object matching.
    """

    prediction: str | None = None
    truth: str | None = None
    probabilities: str | None = None
    instances: tuple[str, str] | None = None


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
    location = as_path(path)
    if location.parent.name == "labels":
        try:
            return omezarr.group_attrs(location.parent.parent)
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


def _instance_volumes(pair: tuple[str, str], z_range: tuple[int, int] | None
                      ) -> dict[str, Any]:
    pred, _ = _open_labels(pair[0], "the instance prediction")
    true, _ = _open_labels(pair[1], "the instance truth")
    return {"prediction": _crop_z(pred, z_range, pair[0]),
            "truth": _crop_z(true, z_range, pair[1])}


def run_evaluation(
    inputs: EvaluationInputs,
    report: PathLike,
    options: EvaluateOptions | None = None,
    *,
    overwrite: bool = False,
    record: dict[str, Any] | None = None,
    client: Client | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Open the inputs, evaluate in one pass, write the report; return the metrics.

    Parameters
    ----------
    inputs
        The volumes: semantic labels (and probabilities) and/or instance labels.
    report
        The report directory (``metrics.json``, ``metrics.md``, plots).
    options
        Ignore label, class names, zero division and z range (:class:`EvaluateOptions`,
        used whole; default: its defaults).
    overwrite
        Replace an existing report.
    record
        The provenance stored under ``meta.volseg`` (default: a fresh
        :func:`volseg.provenance.provenance`).
    client
        Optional ``distributed.Client``.
    quiet
        Do not print the summary table.

    Raises
    ------
    InputError
        For missing or mismatched volumes, or nothing to evaluate.
    OutputExistsError
        When the report exists and ``overwrite`` is false.
    """
    options = options or EvaluateOptions()
    z_range = options.z_range
    if inputs.prediction is None and inputs.instances is None:
        raise InputError("nothing to evaluate: give semantic labels and/or instances")
    if (inputs.prediction is None) != (inputs.truth is None):
        raise InputError("give both the semantic prediction and its truth")
    from volseg.io.guard import check_output_location

    check_output_location(report, [inputs.prediction, inputs.truth, inputs.probabilities,
                                   *(inputs.instances or ())])
    check_report_dir(report, overwrite=overwrite)  # fail before the long computation
    semantic = None
    inst = None
    described: dict[str, Any]
    if inputs.prediction is None or inputs.truth is None:
        assert inputs.instances is not None
        inst = _instance_volumes(inputs.instances, z_range)
        described = {"prediction": inputs.instances[0], "truth": inputs.instances[1]}
        if z_range is not None:
            described["z_range"] = list(z_range)
        described = {"instances": described}
        classes = None
    else:
        prediction, truth = inputs.prediction, inputs.truth
        pred, pred_attrs = _open_labels(prediction, "the prediction")
        true, true_attrs = _open_labels(truth, "the truth")
        volseg_attrs = true_attrs.get("volseg")
        warning = ignore_id_foreground(
            volseg_attrs.get("class_frequencies") if isinstance(volseg_attrs, dict) else None,
            options.ignore_label, name=f"the truth {truth}")
        if warning and not quiet:
            print(f"volseg: warning: {warning}", file=sys.stderr)
        pred, true = _crop_z(pred, z_range, prediction), _crop_z(true, z_range, truth)
        described = {"prediction": prediction, "truth": truth}
        if z_range is not None:
            described["z_range"] = list(z_range)
        classes = options.classes or class_names_from_attrs(
            true_attrs, pred_attrs, _parent_attrs(truth), _parent_attrs(prediction))
        semantic = {
            "prediction": pred, "truth": true, "ignore_label": options.ignore_label,
            "n_classes": len(classes) if classes else None, "probabilities": None,
        }  # fmt: skip
        if inputs.probabilities is not None:
            prob, _ = open_volume(inputs.probabilities)
            if prob.ndim != 4:
                raise InputError(
                    f"{inputs.probabilities}: probabilities must have a class axis "
                    f"(c, z, y, x), got shape {prob.shape}")
            semantic["probabilities"] = _crop_z(prob, z_range, inputs.probabilities)
            described["probabilities"] = inputs.probabilities
        if inputs.instances is not None:
            inst = _instance_volumes(inputs.instances, z_range)
            described["instances"] = {"prediction": inputs.instances[0],
                                      "truth": inputs.instances[1]}
    metrics = evaluate(
        semantic=semantic, instances=inst, class_names=classes,
        zero_division=options.zero_division, ignore_labels=DEFAULT_IGNORE, client=client,
    )  # fmt: skip
    metrics["meta"] = report_meta(
        inputs=described,
        semantic=semantic is not None,
        ignore_label=options.ignore_label,
        instance_ignore_labels=DEFAULT_IGNORE if inst is not None else None,
        provenance=record if record is not None else provenance(command="volseg evaluate"),
    )
    write_report(metrics, report, overwrite=overwrite)
    if not quiet:
        print_summary(metrics)
    return metrics
