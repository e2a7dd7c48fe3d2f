"""Phantoms from options to files: :class:`SynthOptions`, :func:`make_phantom`, writing.

:class:`SynthOptions` is the operation's one options object: :func:`make_phantom`
takes it whole, the ``synth`` workflow stage's config is it plus the output path, and
``volseg synth``'s arguments are generated from it.  :func:`write_phantom` is the only
place of :mod:`volseg.synth` that touches files (through :mod:`volseg.io`): OME-Zarr
outputs (any kind; NGFF 0.5 unless ``ngff`` says 0.4) hold the image, ``labels/truth``
and, when slices are annotated, ``labels/annotation`` (ignore id 255), the label
groups carrying the class names and colours as NGFF ``image-label`` metadata and
``volseg.class_names``, ``volseg.ignore_id`` and ``volseg.class_frequencies``; a
cryo-ET phantom may instead be written as MRC (the tomogram plus
``<stem>_mask.mrc``, slab by slab, voxel size in Å in the header).  A partially
written OME-Zarr output is resumed (phantoms are deterministic).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from volseg.errors import ConfigError, OutputExistsError
from volseg.io.location import Location, PathLike, as_path, require_local
from volseg.io.lock import locks
from volseg.io.mrc import is_mrc
from volseg.ngff import DEFAULT_NGFF, Ngff
from volseg.synth import KINDS, Phantom
from volseg.synth.options import DEFAULT_CHUNKS, SynthOptions

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DEFAULT_CHUNKS", "SynthOptions", "WriteResult", "check_space", "make_phantom",
           "mask_path",
           "summary", "write_phantom"]

def check_space(options: SynthOptions, output: PathLike) -> None:
    """Refuse a phantom larger (uncompressed) than the free space where it goes.

    Checked before the phantom is built (a huge one would take memory just to plan).
    Bytes per voxel: the image (``float32`` for cryo-ET, else ``uint8``), the truth and
    the annotation (``uint8``), plus the pyramids.

    Raises
    ------
    InputError
        When the file system of ``output`` has less free space.
    """
    from volseg.io.guard import check_free_space

    if as_path(output).exists():
        return  # resuming or replacing: its space is (partly) taken already
    per_voxel = (4 + 1) if options.kind == "cryoet" else (1 + 1 + 1)
    voxels = float(np.prod([float(n) for n in options.shape]))
    check_free_space(output, voxels * per_voxel * 8 / 7)


def make_phantom(options: SynthOptions) -> Phantom:
    """Build the phantom the options describe, with the kind's defaults for the unset ones.

    Raises
    ------
    ConfigError
        For a generator parameter the kind does not have.
    """
    kind, shape, chunks, blur = options.kind, options.shape, options.chunks, options.blur
    if kind not in KINDS:
        raise ConfigError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
    kwargs: dict[str, Any] = dict(options.params)
    kwargs["seed"] = int(options.seed)
    kwargs["chunks"] = tuple(chunks) if chunks is not None else DEFAULT_CHUNKS[kind]
    if options.annotated_slices is not None:
        kwargs["annotated_slices"] = int(options.annotated_slices)
    if options.noise is not None:
        kwargs["noise"] = float(options.noise)
    if blur is not None:
        if kind == "cryoet":
            b = [float(blur)] * 3 if isinstance(blur, (int, float)) else [float(v) for v in blur]
            kwargs["blur"] = tuple(b)
        elif isinstance(blur, (int, float)):
            kwargs["blur"] = float(blur)
        else:
            raise ConfigError(f"blur for {kind} is one sigma in voxels, got {blur!r}")
    return KINDS[kind](tuple(shape), **kwargs)


@dataclass
class WriteResult:
    """What :func:`write_phantom` wrote.

    Attributes
    ----------
    outputs
        Paths written (image first).
    class_frequencies
        Voxel count of each class of the truth, by class name.
    skipped
        True when a finished output was found and left as it was.
    seconds
        Wall time.
    """

    outputs: list[str]
    class_frequencies: dict[str, int]
    skipped: bool = False
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def mask_path(path: str | Path) -> Path:
    """``<stem>_mask.mrc`` beside an MRC tomogram."""
    p = Path(path)
    return p.with_name(f"{p.stem}_mask{p.suffix}")


def _label_attrs(phantom: Phantom, provenance: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"volseg": {
        **provenance,
        "class_names": list(phantom.class_names),
        "ignore_id": int(phantom.ignore_id),
        "synth": {k: v for k, v in phantom.extra.items() if k != "annotated_slices"},
        **more,
    }}


def _by_name(phantom: Phantom, counts: dict[str, int] | np.ndarray) -> dict[str, int]:
    if isinstance(counts, np.ndarray):
        return {n: int(counts[i]) for i, n in enumerate(phantom.class_names)}
    return {n: int(counts.get(str(i), 0)) for i, n in enumerate(phantom.class_names)}


@locks("output")
def write_phantom(
    phantom: Phantom,
    output: PathLike,
    *,
    provenance: dict[str, Any],
    overwrite: bool = False,
    if_complete: Literal["error", "skip"] = "error",
    client: Client | None = None,
    ngff: Ngff = DEFAULT_NGFF,
) -> WriteResult:
    """Write a phantom as OME-Zarr (image + label groups) or, for cryo-ET, as MRC.

    Parameters
    ----------
    phantom
        The phantom (lazy arrays).
    output
        An OME-Zarr group path, or a path ending ``.mrc`` (float image only).
    provenance
        Provenance record; stored under ``volseg`` in the image (and label) attributes.
    overwrite
        Replace existing outputs.
    if_complete
        What to do when a finished output exists and ``overwrite`` is false: raise
        :class:`~volseg.errors.OutputExistsError` (the CLI) or leave it (a workflow
        rerun).  A partially written OME-Zarr output is resumed in either case.
    client
        Optional ``distributed.Client``.
    ngff
        OME-Zarr version of OME-Zarr outputs (``SynthOptions.ngff``).
    """
    t0 = time.perf_counter()
    if is_mrc(str(output)):
        local = require_local(as_path(output), "an MRC phantom")
        result = _write_mrc(phantom, local, provenance=provenance, overwrite=overwrite,
                            if_complete=if_complete, client=client)
    else:
        result = _write_omezarr(phantom, as_path(output), provenance=provenance,
                                overwrite=overwrite, if_complete=if_complete, client=client,
                                ngff=ngff)
    result.seconds = time.perf_counter() - t0
    return result


def _write_omezarr(
    phantom: Phantom, output: Location, *, provenance: dict[str, Any], overwrite: bool,
    if_complete: str, client: Client | None, ngff: Ngff,
) -> WriteResult:
    from volseg.io import omezarr
    from volseg.io.guard import check_replaceable, run_identity

    if overwrite:
        check_replaceable(output)
    labels: dict[str, Any] = {"truth": phantom.truth}
    if phantom.annotation is not None:
        labels["annotation"] = phantom.annotation
    groups = {"image": output, **{n: output / "labels" / n for n in labels}}
    states = {k: omezarr.image_state(p) for k, p in groups.items()}
    if not overwrite:
        if any(s == "other" for s in states.values()):
            raise OutputExistsError(
                f"{output} exists and was not written by volseg synth; pass --overwrite to "
                f"replace it")
        if all(s == "complete" for s in states.values()):
            if if_complete == "error":
                raise OutputExistsError(f"{output} exists; pass --overwrite to replace it")
            return WriteResult([str(p) for p in groups.values()],
                               _by_name(phantom, _stored_frequencies(groups["truth"])),
                               skipped=True)
    chunks = tuple(int(c[0]) for c in phantom.image.chunks)
    image_attrs = {"volseg": {**provenance, "synth": phantom.extra}}
    identity = run_identity("synth", {"phantom": phantom.extra, "shape": phantom.image.shape,
                                      "voxel_size": phantom.voxel_size, "ngff": ngff})
    if overwrite or states["image"] != "complete":
        # with overwrite this replaces the whole group, stale label groups included
        omezarr.write_image(phantom.image, output, voxel_size=phantom.voxel_size, chunks=chunks,
                            overwrite=overwrite, attrs=image_attrs, client=client, ngff=ngff,
                            identity=identity)
    for name, array in labels.items():
        if not overwrite and states[name] == "complete":
            continue
        more: dict[str, Any] = {}
        if name == "annotation":
            more["annotated_slices"] = list(phantom.annotated_slices)
        omezarr.write_labels(array, output, name, voxel_size=phantom.voxel_size, chunks=chunks,
                             overwrite=overwrite, attrs=_label_attrs(phantom, provenance, **more),
                             client=client, classes=phantom.class_names,
                             ignore_id=phantom.ignore_id, identity={**identity, "labels": name})
    return WriteResult([str(p) for p in groups.values()],
                       _by_name(phantom, _stored_frequencies(groups["truth"])))


def _stored_frequencies(group: Location) -> dict[str, int]:
    from volseg.io import omezarr

    volseg = omezarr.group_attrs(group).get("volseg", {})
    freqs = volseg.get("class_frequencies", {}) if isinstance(volseg, dict) else {}
    return {str(k): int(v) for k, v in freqs.items()}


def _write_mrc(
    phantom: Phantom, output: Path, *, provenance: dict[str, Any], overwrite: bool,
    if_complete: str, client: Client | None,
) -> WriteResult:
    from volseg.io.mrc import MrcSlabWriter
    from volseg.progress import compute

    if phantom.image.dtype != np.float32:
        raise ConfigError(
            f"MRC output is for float tomograms (cryoet); write {phantom.extra.get('kind')} "
            f"as OME-Zarr, e.g. image.ome.zarr")
    mask = mask_path(output)
    existing = [p for p in (output, mask) if p.exists()]
    if existing and not overwrite:
        if if_complete == "skip" and len(existing) == 2:
            return WriteResult([str(output), str(mask)], {}, skipped=True)
        raise OutputExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
    shape = phantom.image.shape
    step = int(phantom.image.chunks[0][0])
    counts = np.zeros(phantom.n_classes, np.int64)
    label = (f"volseg synth {phantom.extra.get('kind')} seed "
             f"{phantom.extra.get('params', {}).get('seed')}")
    common: dict[str, Any] = {"voxel_size_nm": phantom.voxel_size, "overwrite": overwrite,
                              "labels": [label]}
    # both files are written as <name>.partial and renamed only when complete
    with MrcSlabWriter(output, shape, mode=2, **common) as img_mrc, \
            MrcSlabWriter(mask, shape, mode=0, **common) as mask_mrc:
        for z0 in range(0, shape[0], step):
            z1 = min(z0 + step, shape[0])
            img, lab = compute(phantom.image[z0:z1], phantom.truth[z0:z1],
                               description=f"slab {z0}-{z1} of {shape[0]}", client=client)
            img_mrc.write(z0, img)
            mask_mrc.write(z0, lab.astype(np.int8))
            counts += np.bincount(lab.ravel(), minlength=phantom.n_classes)[: phantom.n_classes]
    freqs = _by_name(phantom, counts)
    return WriteResult([str(output), str(mask)], freqs, extra={"provenance": provenance})


def summary(phantom: Phantom, result: WriteResult) -> dict[str, Any]:
    """JSON-able account of a written phantom."""
    total = max(sum(result.class_frequencies.values()), 1)
    return {
        "kind": phantom.extra.get("kind"),
        "outputs": result.outputs,
        "shape": list(phantom.image.shape),
        "voxel_size_nm": list(phantom.voxel_size),
        "annotated_slices": list(phantom.annotated_slices),
        "class_frequencies": result.class_frequencies,
        "class_percent": {k: round(100.0 * v / total, 3)
                          for k, v in result.class_frequencies.items()},
        "skipped": result.skipped,
        "seconds": round(result.seconds, 2),
    }
