"""Converting any readable volume into OME-Zarr: shared by ``volseg convert`` and the stage.

:class:`ConvertOptions` is the operation's one options object (the ``convert`` stage's
config is it plus the paths; ``volseg convert``'s flags are generated from it).

The input is opened in blocks aligned to the output's storage chunks — one chunk
deep in ``z`` and as wide in ``y, x`` as :data:`volseg.io.omezarr.READ_BLOCK_BYTES`
(0.4) or :data:`volseg.io.omezarr.SHARD_BYTES` (0.5, one shard per block) allows —
so each task reads exactly the region it writes and memory stays bounded by a few
such slabs whatever the input size.  Writing goes through
:func:`volseg.io.store.store_blocks`, so an interrupted conversion resumes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import numpy as np
import zarr

from volseg.errors import InputError, OutputExistsError
from volseg.io import omezarr
from volseg.io.guard import (
    check_free_space,
    check_group_output,
    check_output_location,
    check_replaceable,
    run_identity,
)
from volseg.io.location import Location, PathLike, as_path, check_writable
from volseg.io.lock import locks
from volseg.io.options import ConvertOptions
from volseg.io.readers import VolumeMeta, open_volume
from volseg.io.store import StoreReport, store_blocks
from volseg.ngff import DEFAULT_NGFF, Ngff

if TYPE_CHECKING:
    from distributed import Client

State = Literal["absent", "partial", "complete", "other"]


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote.

    Attributes
    ----------
    output
        The image group, or the label group for label conversions.
    shape, dtype, chunks
        Of level 0 (chunks: the inner chunks in NGFF 0.5).
    shards
        Level-0 shard shape (``None``: unsharded, NGFF 0.4).
    ngff
        The NGFF version written.
    voxel_size
        ``(z, y, x)`` nm written to the transforms (``None``: unknown).
    levels
        Number of pyramid levels.
    state_before
        What was at ``output`` before: ``absent``, ``partial`` (resumed unless
        ``overwrite``) or ``complete``/``other`` (replaced with ``overwrite``).
    report
        Level-0 block counts (computed now / skipped as already done).
    seconds
        Wall time.
    class_frequencies
        Labels (``uint8``): ``{id: voxel count}`` as stored in the group's attributes.
    """

    output: Location
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    voxel_size: tuple[float, float, float] | None
    levels: int
    state_before: State
    report: StoreReport
    seconds: float
    overwritten: bool = False
    shards: tuple[int, ...] | None = None
    ngff: str = DEFAULT_NGFF
    class_frequencies: dict[str, int] | None = None

    @property
    def resumed(self) -> bool:
        """Whether an interrupted conversion was continued."""
        return self.state_before == "partial" and not self.overwritten

    @property
    def nbytes(self) -> int:
        """Uncompressed size of level 0 in bytes."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able summary."""
        return {
            "output": str(self.output), "shape": list(self.shape), "dtype": self.dtype,
            "chunks": list(self.chunks),
            "shards": None if self.shards is None else list(self.shards), "ngff": self.ngff,
            "voxel_size": self.voxel_size, "levels": self.levels,
            "state_before": self.state_before, "resumed": self.resumed,
            "computed_blocks": self.report.computed_blocks,
            "skipped_blocks": self.report.skipped_blocks, "seconds": round(self.seconds, 3),
        }


def check_output(path: Location, overwrite: bool, *, inputs: Sequence[Location] = ()) -> State:
    """Return the state of ``path``; refuse a finished or foreign output without overwrite.

    Raises
    ------
    InputError
        If ``path`` is one of ``inputs`` or contains/is contained in one.
    OutputExistsError
        If ``path`` exists, cannot be resumed and ``overwrite`` is false, or, with
        ``overwrite``, is not an output volseg wrote.
    """
    check_output_location(path, inputs)
    check_group_output(path)
    check_writable(path)
    state = omezarr.image_state(path)
    if state in ("complete", "other") and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    if overwrite:
        check_replaceable(path)
    return state


def _identity(kind: str, source: Location, options: ConvertOptions,
              **more: Any) -> dict[str, Any]:
    return run_identity(f"convert {kind}", {**options.to_dict(), **more},
                        inputs={"source": source})


def _voxel(voxel_size: Sequence[float] | None, meta: VolumeMeta
           ) -> tuple[float, float, float] | None:
    if voxel_size is not None:
        vs = tuple(float(v) for v in voxel_size)
        if len(vs) != 3 or not all(v > 0 for v in vs):
            raise InputError(f"voxel size must be three positive numbers (z y x, nm), got "
                             f"{tuple(voxel_size)}")
        return (vs[0], vs[1], vs[2])
    return meta.voxel_size


def _open_aligned(source: Location, dataset: str | None, chunks: Sequence[int] | None,
                  ngff: Ngff, level: int = 0
                  ) -> tuple[Any, VolumeMeta, omezarr.Layout]:
    """Open ``source`` in writer blocks aligned to the output's storage chunks."""
    probe, meta = open_volume(source, dataset=dataset, level=level)
    layout = omezarr.image_layout(probe.shape, meta.axes, probe.dtype.itemsize, ngff=ngff,
                                  chunks=chunks)
    array, meta = open_volume(source, dataset=dataset, level=level, chunks=layout.blocks)
    return array, meta, layout


@locks("output")
def convert_image(
    source: PathLike, output: PathLike, options: ConvertOptions | None = None, *,
    overwrite: bool = False, attrs: Mapping[str, Any] | None = None,
    client: Client | None = None,
) -> ConvertResult:
    """Convert ``source`` into the OME-Zarr image ``output`` (resuming a partial one).

    Parameters
    ----------
    source
        Anything :func:`volseg.io.open_volume` reads.
    output
        The image group to write.
    options
        Dataset, chunks, voxel size, pyramid and NGFF version (:class:`ConvertOptions`,
        used whole).  The input's origin (MRC header, OME-Zarr translation) becomes the
        output's translation.
    overwrite
        Replace an existing output.
    attrs
        Group attributes (provenance under ``"volseg"``).
    client
        Optional ``distributed.Client``.

    Raises
    ------
    InputError, OutputExistsError
        For unreadable inputs and outputs that exist without ``overwrite``.
    """
    start = time.perf_counter()
    options = options or ConvertOptions()
    source, output = as_path(source), as_path(output)
    array, meta, layout = _open_aligned(source, options.dataset, options.chunks, options.ngff)
    state = check_output(output, overwrite, inputs=[source])
    if state == "absent":
        check_free_space(output, array.nbytes * 8 / 7)  # level 0 and the pyramid
    vs = _voxel(options.voxel_size, meta)
    identity = _identity("image", source, options)
    target = omezarr.create_image(
        output, shape=array.shape, dtype=array.dtype, chunks=layout.chunks,
        shards=layout.shards, voxel_size=vs, axes=meta.axes, overwrite=overwrite,
        attrs=attrs, origin=meta.origin, ngff=options.ngff, identity=identity)
    report = omezarr.store_levels(array, target, output, method="mean",
                                  pyramid=options.pyramid,
                                  description=f"converting {source.name}", client=client,
                                  identity=identity)
    return _result(output, target, vs, state, report, start, overwrite)


def _remap_block(block: np.ndarray, old: np.ndarray, new: np.ndarray,
                 dtype: np.dtype) -> np.ndarray:
    out = block.astype(dtype, copy=True)
    for o, n in zip(old, new, strict=True):
        out[block == o] = n
    return out


def remap_labels(array: da.Array, values: Mapping[int, int]) -> da.Array:
    """Map raw label values to class ids blockwise (values not listed are kept).

    The result is ``uint8`` when the input is and every new value fits, else the
    input's dtype.
    """
    old = np.array(list(values), dtype=np.int64)
    new = np.array(list(values.values()), dtype=np.int64)
    dtype = np.dtype(array.dtype)
    if new.min(initial=0) < 0 or (dtype == np.uint8 and new.max(initial=0) > 255):
        raise InputError(f"label values {dict(values)} do not fit {dtype}; "
                         "map to ids in 0..255 for uint8 labels")
    return da.map_blocks(_remap_block, array, old, new, dtype, dtype=dtype)


def _label_source(source: Location, dataset: str | None, chunks: Sequence[int] | None,
                  ngff: Ngff, values: Mapping[int, int] | None
                  ) -> tuple[da.Array, VolumeMeta, omezarr.Layout]:
    array, meta, layout = _open_aligned(source, dataset, chunks, ngff)
    if array.ndim != 3 or not (np.issubdtype(array.dtype, np.integer) or
                               array.dtype == np.bool_):
        raise InputError(f"{source} has shape {tuple(array.shape)} {array.dtype}; labels must be "
                         f"a 3-D (or 2-D) integer volume")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if values:
        array = remap_labels(array, values)
    return array, meta, layout


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"label name {name!r} must be a plain name such as 'truth'")


@locks("image")
def convert_labels(
    source: PathLike, image: PathLike, name: str, options: ConvertOptions | None = None,
    *, values: Mapping[int, int] | None = None, overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None, client: Client | None = None,
    classes: Sequence[str] | None = None, ignore_id: int | None = None,
) -> ConvertResult:
    """Convert ``source`` into the NGFF label image ``image/labels/<name>``.

    ``image`` must be an OME-Zarr image; the labels take its format (not
    ``options.ngff``), must have its shape and take its voxel size and origin unless
    ``options.voxel_size`` is given.  ``values`` maps raw label values to class ids
    (e.g. ``{255: 1}`` for a 0/255 mask); values not listed are kept.  ``classes`` /
    ``ignore_id`` name the ids (``image-label`` colours and properties).  Other
    parameters as for :func:`convert_image`.
    """
    start = time.perf_counter()
    options = options or ConvertOptions()
    source, image = as_path(source), as_path(image)
    _check_name(name)
    if not image.exists() or "multiscales" not in omezarr.group_attrs(image):
        raise InputError(f"{image} is not an OME-Zarr image; convert the image first, or "
                         f"write the labels as their own label image (--labels OUTPUT)")
    ngff = omezarr.group_version(image) or DEFAULT_NGFF
    array, meta, layout = _label_source(source, options.dataset, options.chunks, ngff, values)
    image_vs = _image_voxel(image, array.shape, source)
    output = image / "labels" / name
    state = check_output(output, overwrite, inputs=[source])
    voxel_size = options.voxel_size
    vs = _voxel(voxel_size, meta) if voxel_size is not None else (image_vs or meta.voxel_size)
    identity = _identity("labels", source, options, values=_values(values))
    target = omezarr.create_labels(
        image, name, shape=array.shape, dtype=array.dtype, chunks=layout.chunks,
        shards=layout.shards, voxel_size=vs, overwrite=overwrite, attrs=attrs,
        classes=classes, ignore_id=ignore_id, identity=identity)
    report, freqs = _fill_labels(array, target, output, source, options.pyramid, client,
                                 identity)
    return _result(output, target, vs, state, report, start, overwrite, freqs)


@locks("output")
def convert_label_image(
    source: PathLike, output: PathLike, options: ConvertOptions | None = None, *,
    values: Mapping[int, int] | None = None, overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None, client: Client | None = None,
    classes: Sequence[str] | None = None, ignore_id: int | None = None,
    image: PathLike | None = None,
) -> ConvertResult:
    """Convert ``source`` into the standalone label image ``output``.

    ``image``: the OME-Zarr image the labels belong to (recorded as their source).
    Other parameters as for :func:`convert_labels` and :func:`convert_image`.
    """
    start = time.perf_counter()
    options = options or ConvertOptions()
    source, output = as_path(source), as_path(output)
    array, meta, layout = _label_source(source, options.dataset, options.chunks, options.ngff,
                                        values)
    state = check_output(output, overwrite, inputs=[source])
    vs = _voxel(options.voxel_size, meta)
    identity = _identity("labels", source, options, values=_values(values))
    target = omezarr.create_label_image(
        output, shape=array.shape, dtype=array.dtype, chunks=layout.chunks,
        shards=layout.shards, voxel_size=vs, overwrite=overwrite, attrs=attrs,
        origin=meta.origin, ngff=options.ngff, classes=classes, ignore_id=ignore_id,
        image=image, identity=identity)
    report, freqs = _fill_labels(array, target, output, source, options.pyramid, client,
                                 identity)
    return _result(output, target, vs, state, report, start, overwrite, freqs)


def _values(values: Mapping[int, int] | None) -> dict[str, int] | None:
    return None if not values else {str(k): int(v) for k, v in values.items()}


def _fill_labels(array: da.Array, target: zarr.Array, output: Location, source: Location,
                 pyramid: bool, client: Client | None,
                 identity: Mapping[str, Any] | None = None,
                 ) -> tuple[StoreReport, dict[str, int] | None]:
    report = store_blocks(array, target, description=f"converting {source.name}",
                          client=client, identity=identity)
    freqs = None
    if np.dtype(array.dtype) == np.uint8:
        freqs = omezarr.store_class_frequencies(output, client=client)
    if pyramid:
        omezarr.write_pyramid(output, method="mode", client=client)
    return report, freqs


def _image_voxel(image: Location, shape: Sequence[int], source: Location
                 ) -> tuple[float, float, float] | None:
    """Return the voxel size of the image at ``image`` after checking the label shape."""
    if not image.exists() or "multiscales" not in omezarr.group_attrs(image):
        return None
    ms = omezarr.read_multiscales(image)
    spatial = tuple(n for n, a in zip(ms.levels[0].shape, ms.axes, strict=True) if a in "zyx")
    if spatial != tuple(shape):
        raise InputError(f"{source} has shape {tuple(shape)} but the image {image} has "
                         f"{spatial}; labels must match the image voxel for voxel")
    return ms.voxel_size


def _result(output: Location, target: zarr.Array, vs: tuple[float, float, float] | None,
            state: State, report: StoreReport, start: float, overwrite: bool,
            class_frequencies: dict[str, int] | None = None) -> ConvertResult:
    levels = len(omezarr.read_multiscales(output).levels)
    return ConvertResult(
        output=output, shape=tuple(target.shape), dtype=str(target.dtype),
        chunks=tuple(target.chunks), voxel_size=vs, levels=levels, state_before=state,
        report=report, seconds=time.perf_counter() - start,
        overwritten=overwrite and state != "absent",
        shards=None if target.shards is None else tuple(target.shards),
        ngff=omezarr.group_version(output) or DEFAULT_NGFF, class_frequencies=class_frequencies)
