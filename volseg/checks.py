"""Checks of array contents that end in a one-line :class:`~volseg.errors.InputError`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from volseg.errors import InputError


def require_finite(data: np.ndarray, origin: Sequence[int], *, name: str, action: str) -> None:
    """Raise :class:`InputError` at the first NaN or infinite voxel of a float window.

    Parameters
    ----------
    data
        The window; its last ``len(origin)`` axes are spatial (leading axes, e.g.
        channels, are allowed).  Integer data pass without a look.
    origin
        The window's start in volume coordinates ``(z, y, x)``.
    name
        How the message names the volume (its file, or "the input").
    action
        What the voxels must be fixed before ("predicting", "training").
    """
    if data.dtype.kind != "f" or np.isfinite(data).all():
        return
    bad = np.argwhere(~np.isfinite(data))[0][-len(origin):]
    where = tuple(int(o) + int(b) for o, b in zip(origin, bad, strict=True))
    raise InputError(f"{name}: NaN or infinite value at (z, y, x) = {where}; fill or mask "
                     f"such voxels before {action}")
