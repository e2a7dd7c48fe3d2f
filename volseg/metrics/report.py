"""Evaluation reports: ``metrics.json``, ``metrics.md``, plots and a terminal summary.

The layout of ``metrics.json`` is stable and documented in ``docs/metrics.md``::

    {"semantic":  {"per_class": {<name>: {precision, recall, f1, iou, dice, support}},
                   "macro": {...}, "weighted": {...}, "accuracy", "cohen_kappa",
                   "average_precision": {<name>: ...},  ...},
     "instances": {"voi_split", "voi_merge", "adapted_rand_error",
                   "adapted_rand_precision", "adapted_rand_recall", "cremi_score",
                   "f1_iou50", "mean_matched_iou", "ap", ...},
     "meta":      {"layout_version", "inputs", "ignore", "volseg"}}

Undefined values (``nan``) are written as JSON ``null``.  Plots use matplotlib's
object-oriented Agg canvas, so no display and no global backend switch is needed.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volseg.errors import OutputExistsError
from volseg.io.location import Location, PathLike, as_path

#: Version of the ``metrics.json`` layout; bumped on any incompatible change.
LAYOUT_VERSION = 1

#: Files a report consists of (those that apply are written).
REPORT_FILES = ("metrics.json", "metrics.md", "confusion.png", "pr_curves.png")

SEMANTIC_IGNORE_NOTE = (
    "truth voxels equal to the ignore label are not annotated and are left out of every "
    "semantic metric; every other voxel is counted"
)
INSTANCE_IGNORE_NOTE = (
    "VOI and adapted Rand leave out voxels whose truth id is in ignore_labels (truth "
    "background 0 by default, as skimage.metrics); prediction ids are never ignored. "
    "Object matching treats id 0 as background in both volumes and removes voxels whose "
    "truth id is another ignore label"
)


def to_json_data(value: Any) -> Any:
    """Return ``value`` as plain JSON data: numpy scalars unwrapped, ``nan``/``inf`` → ``None``."""
    if isinstance(value, Mapping):
        return {str(k): to_json_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_data(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_data(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Path):
        return str(value)
    return value


def report_meta(
    *,
    inputs: Mapping[str, Any],
    semantic: bool = True,
    ignore_label: int | None = None,
    instance_ignore_labels: Sequence[int] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the ``meta`` section of ``metrics.json``.

    Parameters
    ----------
    inputs
        What was evaluated: ``prediction``, ``truth``, ``probabilities`` and
        ``instances`` (``{prediction, truth}``) paths, as given.
    semantic
        Whether a semantic evaluation ran.
    ignore_label
        The semantic ignore label (``None``: every voxel evaluated).
    instance_ignore_labels
        Truth ids ignored by the instance metrics, or ``None`` when no instance
        evaluation ran.
    provenance
        :func:`volseg.provenance.provenance` record (command, config, versions).
    """
    ignore: dict[str, Any] = {}
    if semantic:
        ignore["semantic"] = {"ignore_label": ignore_label, "note": SEMANTIC_IGNORE_NOTE}
    if instance_ignore_labels is not None:
        ignore["instances"] = {
            "ignore_labels": [int(v) for v in instance_ignore_labels],
            "background": 0,
            "note": INSTANCE_IGNORE_NOTE,
        }
    return {
        "layout_version": LAYOUT_VERSION,
        "inputs": dict(inputs),
        "ignore": ignore,
        "volseg": dict(provenance or {}),
    }


def check_report_dir(directory: PathLike, *, overwrite: bool = False) -> Location:
    """Refuse a report directory that already holds a report (unless ``overwrite``).

    Raises
    ------
    OutputExistsError
        When ``directory`` contains report files and ``overwrite`` is false.
    """
    path = as_path(directory)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is not a directory; choose another --report")
    existing = [name for name in REPORT_FILES if (path / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{path / existing[0]} exists; pass --overwrite to replace the report"
        )
    return path


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


_SCORE_HEADERS = ("precision", "recall", "f1", "iou", "dice")


def markdown(metrics: Mapping[str, Any]) -> str:
    """Return the report as Markdown tables (what ``metrics.md`` contains)."""
    lines = ["# volseg evaluation", ""]
    meta = metrics.get("meta", {})
    inputs = meta.get("inputs", {})
    if inputs:
        lines += ["| input | path |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in _flat_inputs(inputs) if v is not None]
        lines.append("")
    sem = metrics.get("semantic")
    if sem:
        has_ap = "average_precision" in sem
        header = ["class", "precision", "recall", "F1", "IoU", "Dice", "support"]
        header += ["AP"] if has_ap else []
        lines += ["## Semantic segmentation", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, row in sem["per_class"].items():
            cells = [name, *(_fmt(row[s]) for s in _SCORE_HEADERS), _fmt(row["support"])]
            cells += [_fmt(sem["average_precision"].get(name))] if has_ap else []
            lines.append("| " + " | ".join(cells) + " |")
        for avg in ("macro", "weighted"):
            cells = [f"*{avg}*", *(_fmt(sem[avg][s]) for s in _SCORE_HEADERS), ""]
            cells += [""] if has_ap else []
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Accuracy **{_fmt(sem['accuracy'])}**, Cohen's kappa **{_fmt(sem['cohen_kappa'])}**, "
            f"{_fmt(sem['evaluated_voxels'])} voxels evaluated, "
            f"{_fmt(sem['ignored_voxels'])} ignored.",
            "",
            "Confusion matrix (rows: truth, columns: prediction, voxel counts):",
            "",
        ]
        names = sem["class_names"]
        lines += ["| truth \\ prediction | " + " | ".join(names) + " |"]
        lines += ["|" + "---|" * (len(names) + 1)]
        for name, row in zip(names, sem["confusion_matrix"], strict=True):
            lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in row) + " |")
        lines.append("")
    inst = metrics.get("instances")
    if inst:
        lines += ["## Instances", "", "| metric | value |", "|---|---|"]
        for key, label in _INSTANCE_ROWS:
            lines.append(f"| {label} | {_fmt(inst.get(key))} |")
        lines += ["", "| IoU threshold | TP | FP | FN | precision | recall | F1 | TP/(TP+FP+FN) |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for m in inst.get("matching", []):
            lines.append(
                f"| {m['threshold']:.2f} | {m['tp']} | {m['fp']} | {m['fn']} | "
                f"{_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | "
                f"{_fmt(m['accuracy'])} |"
            )
        lines.append("")
    ignore = meta.get("ignore", {})
    if ignore:
        lines += ["## Ignore conventions", ""]
        for section, info in ignore.items():
            lines.append(f"* **{section}**: {info.get('note', '')} ({_ignore_value(info)}).")
        lines.append("")
    version = meta.get("volseg", {}).get("versions", {}).get("volseg")
    if version:
        lines += [f"Made by volseg {version}; layout version {meta.get('layout_version')}.", ""]
    return "\n".join(lines)


_INSTANCE_ROWS = (
    ("voi_split", "VOI split (bits)"),
    ("voi_merge", "VOI merge (bits)"),
    ("adapted_rand_error", "adapted Rand error"),
    ("adapted_rand_precision", "adapted Rand precision"),
    ("adapted_rand_recall", "adapted Rand recall"),
    ("cremi_score", "CREMI score"),
    ("f1_iou50", "F1 at IoU 0.5"),
    ("mean_matched_iou", "mean matched IoU (at 0.5)"),
    ("ap", "AP (IoU 0.5:0.05:0.95)"),
    ("n_true_objects", "truth objects"),
    ("n_pred_objects", "predicted objects"),
)


def _ignore_value(info: Mapping[str, Any]) -> str:
    if "ignore_label" in info:
        return f"ignore label: {info['ignore_label']}"
    return f"ignore labels: {info.get('ignore_labels')}"


def _flat_inputs(inputs: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in inputs.items():
        if isinstance(value, Mapping):
            out += _flat_inputs(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def plot_confusion(semantic: Mapping[str, Any], path: PathLike) -> None:
    """Write the row-normalised confusion matrix, annotated, as a PNG."""
    _save(confusion_figure(semantic), path)


def confusion_figure(semantic: Mapping[str, Any]) -> Any:
    """The figure of :func:`plot_confusion` (constrained layout: no label is clipped)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(semantic["confusion_matrix"], dtype=np.float64)
    names = list(semantic["class_names"])
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(names)
    size = max(4.0, 0.7 * n + 2.5)
    longest = max((len(str(name)) for name in names), default=0)
    room = 0.07 * longest  # inches for the tick labels left of and below the matrix
    fig = Figure(figsize=(size + 1.0 + room, size + room), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of truth row")
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title("Confusion matrix (row-normalised)")
    for i in range(n):
        for j in range(n):
            text = "–" if rows[i, 0] == 0 else f"{norm[i, j]:.2f}"
            ax.text(
                j, i, text, ha="center", va="center", fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )  # fmt: skip
    return fig


def _save(fig: Any, path: PathLike) -> None:
    """Write a figure as PNG to a local path or a URL."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1)  # nothing clipped
    as_path(path).write_bytes(buffer.getvalue())


def plot_pr_curves(semantic: Mapping[str, Any], path: PathLike) -> None:
    """Write the per-class precision–recall curves (with their AP) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 5.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, curve in semantic["pr_curves"].items():
        ap = semantic["average_precision"].get(name)
        if len(curve["recall"]) < 2:
            continue
        ax.plot(
            curve["recall"], curve["precision"], drawstyle="steps-post",
            label=f"{name} (AP {_fmt(ap, 3)})",
        )  # fmt: skip
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision–recall per class")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def write_report(
    metrics: Mapping[str, Any], directory: PathLike, *, overwrite: bool = False
) -> list[Location]:
    """Write ``metrics.json``, ``metrics.md`` and the plots that apply.

    Parameters
    ----------
    metrics
        ``{"semantic": ..., "instances": ..., "meta": ...}`` (sections optional).
    directory
        Report directory (created).
    overwrite
        Replace an existing report instead of raising
        :class:`~volseg.errors.OutputExistsError`.

    Returns
    -------
    list of Path
        The files written.
    """
    path = check_report_dir(directory, overwrite=overwrite)
    if isinstance(path, Path):
        path.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:  # a stale plot must not survive an overwrite
        (path / name).unlink(missing_ok=True)
    data = to_json_data(metrics)
    written = []
    target = path / "metrics.json"
    target.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    written.append(target)
    target = path / "metrics.md"
    target.write_text(markdown(data))
    written.append(target)
    sem = data.get("semantic")
    if sem:
        target = path / "confusion.png"
        plot_confusion(sem, target)
        written.append(target)
        if "pr_curves" in sem:
            target = path / "pr_curves.png"
            plot_pr_curves(sem, target)
            written.append(target)
    return written


def print_summary(metrics: Mapping[str, Any], *, console: Any = None) -> None:
    """Print the main figures as rich tables (per class, averages, instances)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    data = to_json_data(metrics)
    sem = data.get("semantic")
    if sem:
        has_ap = "average_precision" in sem
        table = Table(title="Semantic segmentation", title_justify="left")
        table.add_column("class")
        for header in ("precision", "recall", "F1", "IoU", "support", *(["AP"] if has_ap else [])):
            table.add_column(header, justify="right")
        for name, row in sem["per_class"].items():
            cells = [_fmt(row[s], 3) for s in ("precision", "recall", "f1", "iou")]
            cells.append(_fmt(row["support"]))
            if has_ap:
                cells.append(_fmt(sem["average_precision"].get(name), 3))
            table.add_row(name, *cells)
        for avg in ("macro", "weighted"):
            cells = [_fmt(sem[avg][s], 3) for s in ("precision", "recall", "f1", "iou")]
            table.add_row(f"[italic]{avg}[/]", *cells, "", *([""] if has_ap else []))
        table.caption = (
            f"accuracy {_fmt(sem['accuracy'])} · Cohen's kappa {_fmt(sem['cohen_kappa'])} · "
            f"{_fmt(sem['evaluated_voxels'])} voxels ({_fmt(sem['ignored_voxels'])} ignored)"
        )
        console.print(table)
    inst = data.get("instances")
    if inst:
        table = Table(title="Instances", title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, label in _INSTANCE_ROWS:
            table.add_row(label, _fmt(inst.get(key)))
        console.print(table)
