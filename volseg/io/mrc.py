"""Writing MRC files slab by slab: memory bounded by one slab, complete or absent.

:func:`write_mrc` writes a dask or numpy ``(z, y, x)`` volume with
``mrcfile.new_mmap``: one z-slab is computed, copied into the memory-mapped data
block and released before the next one, so a tomogram far larger than memory can be
written.  The file is written as ``<path>.partial`` and renamed when finished, so a
crash leaves no truncated ``path``.  The voxel size goes into the header in ångström
(MRC convention; volseg works in nanometres) and the header statistics (``dmin``,
``dmax``, ``dmean``, ``rms``) are accumulated over the slabs.

:class:`MrcSlabWriter` is the underlying writer, for callers that produce several
volumes from one computation (``volseg synth`` writes a tomogram and its mask).

Example
-------
>>> write_mrc(mask, "membranes.mrc", voxel_size_nm=(1.4, 1.4, 1.4))  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from volseg.errors import InputError, OutputExistsError

if TYPE_CHECKING:
    from distributed import Client

MODES: dict[int, np.dtype[Any]] = {
    0: np.dtype(np.int8),
    1: np.dtype(np.int16),
    2: np.dtype(np.float32),
    6: np.dtype(np.uint16),
    12: np.dtype(np.float16),
}
"""The MRC modes volseg writes and the numpy dtype each stores."""

_DEFAULT_MODE: dict[np.dtype[Any], int] = {
    np.dtype(np.bool_): 0,
    np.dtype(np.int8): 0,
    np.dtype(np.uint8): 6,  # as mrcfile does: MRC2014 has no unsigned 8-bit mode
    np.dtype(np.int16): 1,
    np.dtype(np.uint16): 6,
    np.dtype(np.float16): 12,
    np.dtype(np.float32): 2,
    np.dtype(np.float64): 2,
}

SLAB_BYTES = 64 * 2**20
"""Target size of one written slab (a dask z-chunk larger than this is still one slab)."""


#: File name endings of MRC files: maps, tomograms, image stacks, tilt series, aligned stacks.
MRC_SUFFIXES = (".mrc", ".rec", ".map", ".mrcs", ".st", ".ali")


def is_mrc(path: str | Path) -> bool:
    """Whether ``path`` names an MRC file (by its ending, :data:`MRC_SUFFIXES`)."""
    return Path(path).suffix.lower() in MRC_SUFFIXES


def partial_path(path: str | Path) -> Path:
    """Return ``<path>.partial``, where an MRC file is written before it is renamed."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


def default_mode(dtype: npt.DTypeLike) -> int:
    """Return the MRC mode that stores ``dtype`` without loss.

    ``bool``/``int8`` → 0, ``uint8``/``uint16`` → 6, ``int16`` → 1, ``float16`` → 12,
    ``float32``/``float64`` → 2 (``float64`` is rounded to ``float32``).

    Raises
    ------
    InputError
        For dtypes without a lossless MRC mode (e.g. 32-bit integers): pass ``mode``.
    """
    dt = np.dtype(dtype)
    try:
        return _DEFAULT_MODE[dt]
    except KeyError:
        raise InputError(
            f"MRC has no mode for {dt}; choose one, e.g. mode=2 (float32, exact for integers "
            f"below 2**24) or mode=1 (int16)"
        ) from None


def _check_mode(mode: int) -> np.dtype[Any]:
    if mode not in MODES:
        raise InputError(f"MRC mode {mode} is not supported; use one of {sorted(MODES)}")
    return MODES[mode]


def _cast(slab: np.ndarray, target: np.dtype[Any], where: str) -> np.ndarray:
    """Cast ``slab`` to ``target``, refusing integer values the target cannot hold."""
    if slab.dtype == target:
        return slab
    if slab.dtype == np.bool_:
        return slab.astype(target)
    if target.kind in "iu" and slab.size:
        info = np.iinfo(target)
        lo, hi = slab.min(), slab.max()
        if slab.dtype.kind == "f" and not np.array_equal(slab, np.round(slab)):
            raise InputError(f"{where}: non-integer values do not fit MRC mode for {target}; "
                             f"use mode 2 (float32)")
        if lo < info.min or hi > info.max:
            raise InputError(f"{where}: values {lo}..{hi} do not fit {target}; choose a wider "
                             f"MRC mode (1: int16, 6: uint16, 2: float32)")
    if target.kind == "f" and slab.dtype.kind in "iu" and slab.size:
        exact = 2 ** (np.finfo(target).nmant + 1)
        if slab.max() > exact or slab.min() < -exact:
            raise InputError(f"{where}: integers beyond {exact} are not exact in {target}")
    return slab.astype(target)


class MrcSlabWriter:
    """Write one MRC volume slab by slab into ``<path>.partial``; rename on success.

    Use as a context manager: on a clean exit the header (voxel size, statistics,
    labels) is written and the file renamed to ``path``; on an exception the partial
    file is removed.

    Parameters
    ----------
    path
        The final MRC file.
    shape
        ``(z, y, x)`` of the volume.
    mode
        MRC mode (see :data:`MODES`).
    voxel_size_nm
        ``(z, y, x)`` voxel size in nanometres (stored in ångström), or ``None``
        (left at mrcfile's default of 0).
    overwrite
        Replace an existing ``path``; otherwise it is refused.
    labels
        Text labels for the header (at most 9 are kept, each cut to 80 characters;
        mrcfile adds a tenth, "Created by mrcfile.py").

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """

    def __init__(
        self,
        path: str | Path,
        shape: Sequence[int],
        *,
        mode: int,
        voxel_size_nm: Sequence[float] | None,
        overwrite: bool = False,
        labels: Sequence[str] = (),
    ) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise InputError(f"{self.path}: MRC volumes are (z, y, x) with positive sizes, got "
                             f"{self.shape}")
        self.mode = int(mode)
        self.dtype = _check_mode(self.mode)
        if voxel_size_nm is not None:
            vs = tuple(float(v) for v in voxel_size_nm)
            if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
                raise InputError(f"{self.path}: voxel size must be three positive numbers "
                                 f"(z y x, nm), got {tuple(voxel_size_nm)}")
        self.voxel_size_nm = None if voxel_size_nm is None else vs
        self.labels = [str(t)[:80] for t in labels][:9]  # mrcfile adds its own label
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path} exists; pass --overwrite to replace it")
        self.partial = partial_path(self.path)
        self._mrc: Any = None
        self._written = np.zeros(self.shape[0], bool)
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._min = math.inf
        self._max = -math.inf

    def __enter__(self) -> MrcSlabWriter:
        import mrcfile

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._mrc = mrcfile.new_mmap(str(self.partial), self.shape, mrc_mode=self.mode,
                                     overwrite=True)
        return self

    def write(self, z0: int, slab: npt.ArrayLike) -> None:
        """Write ``slab`` (``(n, y, x)``) at sections ``z0 .. z0 + n`` and update the statistics.

        Raises
        ------
        InputError
            If the slab does not fit the volume or its values do not fit the mode.
        """
        if self._mrc is None:
            raise RuntimeError("MrcSlabWriter.write outside its `with` block")
        data = np.asarray(slab)
        n = data.shape[0] if data.ndim == 3 else -1
        if data.ndim != 3 or data.shape[1:] != self.shape[1:] or not (
                z0 >= 0 and z0 + n <= self.shape[0]):
            raise InputError(f"{self.path}: slab of shape {data.shape} at z={z0} does not fit "
                             f"the volume {self.shape}")
        data = _cast(data, self.dtype, f"{self.path} z={z0}..{z0 + n}")
        self._mrc.data[z0:z0 + n] = data
        self._written[z0:z0 + n] = True
        if data.size:
            values = data.astype(np.float64)
            count = values.size
            mean = float(values.mean())
            m2 = float(np.square(values - mean).sum())
            total = self._count + count
            delta = mean - self._mean
            # Chan et al.: pairwise update of mean and sum of squared deviations
            self._m2 += m2 + delta * delta * self._count * count / total
            self._mean += delta * count / total
            self._count = total
            self._min = min(self._min, float(values.min()))
            self._max = max(self._max, float(values.max()))

    def stats(self) -> tuple[float, float, float, float]:
        """Return ``(dmin, dmax, dmean, rms)`` of what was written (rms: standard deviation)."""
        if self._count == 0:
            return 0.0, 0.0, 0.0, 0.0
        return self._min, self._max, self._mean, math.sqrt(max(self._m2 / self._count, 0.0))

    def _finish(self) -> None:
        mrc = self._mrc
        if not self._written.all():
            missing = int((~self._written).sum())
            raise InputError(f"{self.path}: {missing} of {self.shape[0]} sections were never "
                             f"written")
        if self.voxel_size_nm is not None:
            z, y, x = (10.0 * v for v in self.voxel_size_nm)  # nm -> Å
            mrc.voxel_size = (x, y, z)
        dmin, dmax, dmean, rms = self.stats()
        mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = dmin, dmax, dmean
        mrc.header.rms = rms
        for text in self.labels:
            mrc.add_label(text)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        mrc = self._mrc
        finished = False
        try:
            if exc_type is None:
                self._finish()
                finished = True
        finally:
            self._mrc = None
            if mrc is not None:
                mrc.close()
            if finished:
                self.partial.replace(self.path)
            else:
                self.partial.unlink(missing_ok=True)


def z_slabs(array: Any, slab_bytes: int = SLAB_BYTES) -> list[tuple[int, int]]:
    """Return ``[z0, z1)`` slabs covering a ``(z, y, x)`` array, each about ``slab_bytes``.

    For a dask array the slabs follow its z-chunk boundaries (so no chunk is computed
    twice): consecutive z-chunks are merged while the slab stays within ``slab_bytes``,
    and a single z-chunk larger than that is one slab.  Numpy arrays are cut every
    ``slab_bytes`` (at least one section).
    """
    plane = int(np.prod(array.shape[1:])) * np.dtype(array.dtype).itemsize
    per_slab = max(1, slab_bytes // max(plane, 1))
    chunks = getattr(array, "chunks", None)
    if isinstance(chunks, tuple) and chunks and isinstance(chunks[0], tuple):
        sizes = [int(c) for c in chunks[0]]
    else:
        sizes = [1] * int(array.shape[0])
    bounds = [0]
    depth = 0
    for size in sizes:
        if depth and depth + size > per_slab:
            bounds.append(bounds[-1] + depth)
            depth = 0
        depth += size
    if depth:
        bounds.append(bounds[-1] + depth)
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def write_mrc(
    array: Any,
    path: str | Path,
    *,
    voxel_size_nm: Sequence[float] | None,
    overwrite: bool = False,
    mode: int | None = None,
    labels: Sequence[str] = (),
    client: Client | None = None,
) -> Path:
    """Write a ``(z, y, x)`` volume to an MRC file, one slab at a time.

    Parameters
    ----------
    array
        A dask or numpy array, ``(z, y, x)`` (a 2-D ``(y, x)`` image is written as one
        section).  It is computed (dask) or copied (numpy) in z-slabs of about
        :data:`SLAB_BYTES` that follow the dask z-chunks (:func:`z_slabs`).
    path
        The MRC file to write.
    voxel_size_nm
        ``(z, y, x)`` voxel size in nanometres; stored in ångström in the header.
        ``None`` leaves it unset (0).
    overwrite
        Replace an existing file.
    mode
        MRC mode (0 int8, 1 int16, 2 float32, 6 uint16, 12 float16); default
        :func:`default_mode` of the array's dtype.  Values that do not fit the mode
        are refused rather than wrapped.
    labels
        Header text labels (at most 9 of 80 characters are kept).
    client
        Optional ``distributed.Client`` that computes the slabs.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    InputError
        For arrays that are not 2-D/3-D or whose values do not fit the mode.

    Notes
    -----
    Peak memory is one slab (plus its float64 copy for the statistics). ``rms`` in
    the header is the standard deviation of the values, as ``mrcfile`` computes it;
    the statistics are accumulated slab by slab with the pairwise update of Chan,
    Golub and LeVeque (1979).
    """
    import dask.array as da

    from volseg.progress import compute

    path = Path(path)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"{path}: MRC volumes are (z, y, x); got an array of shape "
                         f"{tuple(array.shape)}")
    mrc_mode = default_mode(array.dtype) if mode is None else int(mode)
    with MrcSlabWriter(path, array.shape, mode=mrc_mode, voxel_size_nm=voxel_size_nm,
                       overwrite=overwrite, labels=labels) as writer:
        for z0, z1 in z_slabs(array):
            slab = array[z0:z1]
            if isinstance(slab, da.Array):
                (slab,) = compute(slab, description=f"{path.name}: sections {z0}-{z1} of "
                                                    f"{array.shape[0]}", client=client)
            writer.write(z0, slab)
    return path
