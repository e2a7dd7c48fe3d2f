"""Training data: the leak-free z split, regions read lazily or in memory, patches.

The volume is split along z into *regions* (slabs ``[z0, z1)`` of sections), each
either training or validation, separated by at least ``gap`` sections.  Everything
a sample reads lies inside its own region: image context beyond the region's faces
is mirrored from inside, labels beyond them are "ignore".  So no training input (image
or label) comes from a validation or gap section, whatever the network's context.

Small regions are loaded into memory once; large ones are read patch by patch from
the chunked store (only the labels' per-block class counts are computed up front, in
one pass).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from volseg.checks import require_finite
from volseg.errors import ConfigError, InputError
from volseg.models.spec import ModelSpec, Normalization
from volseg.train.config import NormalizationConfig, SplitConfig
from volseg.train.sampling import BlockTable

ZRange = tuple[int, int]


# -- split ---------------------------------------------------------------------------
def _merge(ranges: Sequence[ZRange]) -> list[ZRange]:
    out: list[ZRange] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _distance(r: ZRange, s: ZRange) -> int:
    """Number of sections strictly between two disjoint ranges (negative if they overlap)."""
    return max(s[0] - r[1], r[0] - s[1])


def _subtract(r: ZRange, forbidden: Sequence[ZRange], gap: int) -> list[ZRange]:
    """Parts of ``r`` at least ``gap`` sections away from every forbidden range."""
    pieces = [r]
    for f0, f1 in forbidden:
        lo, hi = f0 - gap, f1 + gap
        nxt = []
        for a, b in pieces:
            if b <= lo or a >= hi:
                nxt.append((a, b))
                continue
            if a < lo:
                nxt.append((a, lo))
            if b > hi:
                nxt.append((hi, b))
        pieces = nxt
    return [p for p in pieces if p[1] > p[0]]


def annotated_sections(labels: da.Array, *, ignore_id: int) -> np.ndarray:
    """Boolean per z: does the section hold any annotated (non-ignore) voxel?"""
    return np.asarray((labels != ignore_id).any(axis=(1, 2)).compute())


def plan_split(
    cfg: SplitConfig,
    *,
    depth: int,
    annotated: np.ndarray | None = None,
    context: int = 0,
) -> tuple[list[ZRange], list[ZRange]]:
    """Return the training and validation z ranges of a volume of ``depth`` sections.

    Parameters
    ----------
    cfg
        The split configuration.
    depth
        Number of sections.
    annotated
        ``slices`` mode: boolean per section, True where annotated.
    context
        ``slices`` mode: default half thickness of the slab around each annotated
        section (the model's z context).

    Raises
    ------
    ConfigError
        Ranges outside the volume, overlapping, closer than ``gap``, or nothing left
        to train or validate on.
    """
    gap = cfg.gap
    if cfg.mode == "z_ranges":
        for name in ("train", "validation"):
            for a, b in getattr(cfg, name) or ():
                if b > depth:
                    raise ConfigError(
                        f"split.{name}: range [{a}, {b}) exceeds the volume depth {depth}"
                    )
        if cfg.validation is not None:
            val = _merge(cfg.validation)
        else:
            n_val = max(1, round(cfg.validation_fraction * depth))
            val = [(depth - n_val, depth)]
        if cfg.train is not None:
            train = _merge(cfg.train)
            for t in train:
                for v in val:
                    if _distance(t, v) < gap:
                        raise ConfigError(
                            f"split.train range [{t[0]}, {t[1]}) is within split.gap={gap} "
                            f"sections of validation range [{v[0]}, {v[1]}); move it or "
                            "lower split.gap"
                        )
        else:
            train = _subtract((0, depth), val, gap)
    else:
        if annotated is None:
            raise ValueError("slices mode needs the annotated sections")
        slices = [int(z) for z in np.flatnonzero(annotated)]
        if len(slices) < 2:
            raise ConfigError(
                f"split.mode=slices needs at least 2 annotated sections, found {len(slices)}; "
                "use split.mode=z_ranges"
            )
        if cfg.validation_slices is not None:
            val_slices = sorted(set(cfg.validation_slices))
            bad = [z for z in val_slices if z not in slices]
            if bad:
                raise ConfigError(
                    f"split.validation_slices: section {bad[0]} is not annotated "
                    f"(annotated: {slices})"
                )
        else:
            n_val = max(1, round(cfg.validation_fraction * len(slices)))
            val_slices = slices[-n_val:]
        slab = cfg.slab if cfg.slab is not None else context
        val = _merge([(max(0, z - slab), min(depth, z + slab + 1)) for z in val_slices])
        train_parts: list[ZRange] = []
        for z in slices:
            if z in val_slices:
                continue
            train_parts += [
                p for p in _subtract((max(0, z - slab), min(depth, z + slab + 1)), val, gap)
                if p[0] <= z < p[1]
            ]
        train = _merge(train_parts)
    if not train:
        raise ConfigError(
            f"split leaves no training sections (depth {depth}, gap {gap}); "
            "adjust split.train / split.validation / split.gap"
        )
    if not val:
        raise ConfigError("split leaves no validation sections; adjust split.validation")
    for t in train:
        for v in val:
            if _distance(t, v) < gap:  # pragma: no cover - guaranteed above
                raise AssertionError("split is not leak-free")
    return train, val


# -- label mapping -------------------------------------------------------------------
def label_lut(
    label_map: dict[int, int] | None, *, dtype: np.dtype[Any], ignore_id: int
) -> np.ndarray | None:
    """Lookup table raw value -> class id (unlisted values -> ``ignore_id``), or None."""
    if label_map is None:
        return None
    if np.dtype(dtype).kind not in "ui" or np.dtype(dtype).itemsize > 2:
        raise ConfigError(
            f"label_map needs 8- or 16-bit integer labels, got {np.dtype(dtype)}"
        )
    size = 2 ** (8 * np.dtype(dtype).itemsize)
    lut = np.full(size, ignore_id, dtype=np.int32)
    for raw, cid in label_map.items():
        if not 0 <= raw < size:
            raise ConfigError(f"label_map key {raw} is outside the {np.dtype(dtype)} range")
        lut[raw] = cid
    return lut


def map_labels(raw: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    """Apply the lookup table (int32 result)."""
    if lut is None:
        return np.asarray(raw).astype(np.int32, copy=False)
    return lut[np.asarray(raw)]


# -- regions -------------------------------------------------------------------------
def _read(arr: Any, box: tuple[slice, ...]) -> np.ndarray:
    part = arr[box]
    if isinstance(part, da.Array):
        with dask.config.set(scheduler="synchronous"):
            return np.asarray(part.compute())
    return np.asarray(part)


class Region:
    """One z-slab of the volume: the only place its samples read from.

    Parameters
    ----------
    image, labels
        Dask arrays of the whole volume ``(z, y, x)``.
    z_range
        ``[z0, z1)``.
    lut
        Raw label -> class id table (or None).
    ignore_id
        The "not annotated" id.
    in_memory
        Load the region's image and labels now (else read lazily).
    name
        How errors name the image (its file).
    """

    def __init__(
        self,
        image: da.Array,
        labels: da.Array,
        z_range: ZRange,
        *,
        lut: np.ndarray | None,
        ignore_id: int,
        in_memory: bool,
        name: str = "the image",
    ) -> None:
        z0, z1 = z_range
        self.name = name
        self.z_range = z_range
        self.ignore_id = ignore_id
        self.lut = lut
        self._image_da = image[z0:z1]
        self._labels_da = labels[z0:z1]
        self.in_memory = in_memory
        self.image: Any = self._image_da
        self.labels: Any = self._labels_da
        if in_memory:
            with dask.config.set(scheduler="threads"):
                self.image, self.labels = dask.compute(self._image_da, self._labels_da)
            require_finite(self.image, (z0, 0, 0), name=name, action="training")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Region shape ``(z, y, x)``."""
        return tuple(int(s) for s in self._image_da.shape)  # type: ignore[return-value]

    def block_slices(self) -> list[tuple[slice, slice, slice]]:
        """Slices of the label blocks (the store's chunks)."""
        return list(da.core.slices_from_chunks(self._labels_da.chunks))

    def block_table(self, n_classes: int) -> BlockTable:
        """Count annotated voxels of each class per block (one pass over the labels)."""
        slices = self.block_slices()
        lut, ignore = self.lut, self.ignore_id
        blocks = self._labels_da.to_delayed().ravel()

        def count(raw: np.ndarray) -> np.ndarray:
            ids = map_labels(raw, lut)
            ids = ids[ids != ignore]
            if ids.size and (ids.min() < 0 or ids.max() >= n_classes):
                bad = int(ids[(ids < 0) | (ids >= n_classes)][0])
                raise InputError(
                    f"label value {bad} is neither a class id 0..{n_classes - 1} nor the "
                    f"ignore id {ignore}; add it to label_map"
                )
            return np.bincount(ids, minlength=n_classes)[:n_classes]

        if self.in_memory:
            counts = [count(self.labels[s]) for s in slices]
        else:
            from volseg.progress import compute

            counts = list(compute(*[dask.delayed(count)(b) for b in blocks],
                                  description="counting labels"))
        return BlockTable(
            starts=np.array([[s.start for s in sl] for sl in slices], dtype=np.int64),
            shapes=np.array([[s.stop - s.start for s in sl] for sl in slices], dtype=np.int64),
            counts=np.stack(counts).astype(np.int64),
        )

    def load_block(self, index: int) -> np.ndarray:
        """Class ids of one label block."""
        return map_labels(_read(self.labels, self.block_slices()[index]), self.lut)

    def read_image(self, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
        """Raw image window; the parts outside the region are mirrored from inside."""
        box, pads = self._clip(start, shape)
        data = _read(self.image, box)
        if not self.in_memory:  # an in-memory region was checked once, when loaded
            origin = (self.z_range[0] + box[0].start, box[1].start, box[2].start)
            require_finite(data, origin, name=self.name, action="training")
        if any(p != (0, 0) for p in pads):
            mode = "reflect" if min(data.shape) > 1 else "edge"
            if mode == "reflect" and any(
                (a or b) and n == 1 for (a, b), n in zip(pads, data.shape, strict=True)
            ):
                mode = "edge"
            data = np.pad(data, pads, mode=mode)  # type: ignore[call-overload]
        return data

    def read_labels(self, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
        """Class ids of a window; ``ignore_id`` outside the region."""
        box, pads = self._clip(start, shape)
        data = map_labels(_read(self.labels, box), self.lut)
        if any(p != (0, 0) for p in pads):
            data = np.pad(data, pads, mode="constant", constant_values=self.ignore_id)
        return data

    def _clip(
        self, start: Sequence[int], shape: Sequence[int]
    ) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
        box, pads = [], []
        for s, n, ext in zip(start, shape, self.shape, strict=True):
            a, b = max(s, 0), min(s + n, ext)
            if b <= a:  # entirely outside: read the nearest section and pad
                a = min(max(s, 0), ext - 1)
                b = a + 1
            box.append(slice(a, b))
            pads.append((a - s, s + n - b))
        pads = [(max(p, 0), max(q, 0)) for p, q in pads]
        return tuple(box), pads


def open_inputs(
    image_path: str,
    labels_path: str,
    *,
    image_dataset: str | None = None,
    labels_dataset: str | None = None,
) -> tuple[da.Array, da.Array, tuple[float, float, float] | None]:
    """Open image and labels with :func:`volseg.io.open_volume` and check they match."""
    from volseg.io import open_volume

    image, meta = open_volume(image_path, dataset=image_dataset)
    labels, _ = open_volume(labels_path, dataset=labels_dataset)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if labels.ndim == 4 and labels.shape[0] == 1:
        labels = labels[0]
    if image.ndim != 3:
        raise InputError(f"{image_path}: expected a single-channel (z, y, x) image, got "
                         f"shape {image.shape}")
    if labels.shape != image.shape:
        raise InputError(
            f"{labels_path}: labels shape {labels.shape} differs from image shape "
            f"{image.shape}"
        )
    if labels.dtype.kind not in "ui":
        raise InputError(f"{labels_path}: labels must be integers, got {labels.dtype}")
    if labels.chunks != image.chunks:
        labels = labels.rechunk(image.chunks)
    return image, labels, meta.voxel_size


def sample_normalization(
    regions: Sequence[Region], cfg: NormalizationConfig, rng: np.random.Generator,
    *, max_voxels_per_chunk: int = 262_144,
) -> Normalization:
    """Compute normalisation statistics from ``cfg.sample_chunks`` random chunks.

    Chunks are drawn (with the given generator) among the blocks of the training
    regions; at most ``max_voxels_per_chunk`` evenly strided voxels of each are used.
    """
    keys = [(r, b) for r, reg in enumerate(regions) for b in range(len(reg.block_slices()))]
    n = min(cfg.sample_chunks, len(keys))
    chosen = rng.choice(len(keys), size=n, replace=False)
    parts = []
    for i in sorted(int(c) for c in chosen):
        r, b = keys[i]
        region = regions[r]
        box = region.block_slices()[b]
        block = _read(region.image, box)
        require_finite(block, (region.z_range[0] + box[0].start, box[1].start, box[2].start),
                       name=region.name, action="training")
        block = block.ravel()
        step = max(1, math.ceil(block.size / max_voxels_per_chunk))
        parts.append(block[::step])
    return Normalization.from_sample(
        np.concatenate(parts), mode=cfg.mode, low_percentile=cfg.low_percentile,
        high_percentile=cfg.high_percentile,
    )


# -- patches -------------------------------------------------------------------------
def extract(
    region: Region, start: Sequence[int], spec: ModelSpec
) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """Read one sample: raw input window with a symmetric halo, and labels.

    Parameters
    ----------
    region
        Where to read.
    start
        Region-local start of the output window (``spec.patch_size``).
    spec
        Gives the patch size and the halo.

    Returns
    -------
    image : numpy.ndarray
        Raw input of shape ``patch + 2 * max(before, after)`` per axis: symmetric, so
        that flips and rotations keep the output-input alignment.
    labels : numpy.ndarray
        Class ids of the output window (``ignore_id`` outside the region).
    trim : tuple of (int, int)
        Voxels to cut from the start and end of each image axis after augmentation
        to get the spec's exact ``(before, after)`` halo (see :func:`trim_halo`).
    """
    sym = [max(b, a) for b, a in spec.halo]
    trim = tuple((m - b, m - a) for m, (b, a) in zip(sym, spec.halo, strict=True))
    in_start = [s - m for s, m in zip(start, sym, strict=True)]
    in_shape = [p + 2 * m for p, m in zip(spec.patch_size, sym, strict=True)]
    image = region.read_image(in_start, in_shape)
    labels = region.read_labels(start, spec.patch_size)
    return image, labels, trim


def trim_halo(image: np.ndarray, trim: Sequence[tuple[int, int]]) -> np.ndarray:
    """Cut ``(front, back)`` voxels from the last ``len(trim)`` axes of ``image``."""
    lead = image.ndim - len(trim)
    box = (slice(None),) * lead + tuple(slice(f, n - b) for (f, b), n in
                                        zip(trim, image.shape[lead:], strict=True))
    return image[box]
