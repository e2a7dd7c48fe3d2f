"""Checks of array contents: one-line :class:`~volseg.errors.InputError` s and warnings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


#: The ignore id of the label volumes unless a config says otherwise.
DEFAULT_IGNORE_ID = 255


def ignore_id_foreground(frequencies: Mapping[str, int] | Mapping[int, int] | None,
                         ignore_id: int | None = DEFAULT_IGNORE_ID, *,
                         name: str = "the labels") -> str | None:
    """Return a warning when a label volume's only foreground id is the ignore id.

    Binary masks are often stored as 0 / 255 (Lucchi's mitochondria, for one); with the
    default ignore id 255 every foreground voxel would then be "not annotated": left
    out of training and of the metrics, silently.

    Parameters
    ----------
    frequencies
        ``{id: voxel count}`` of the volume (``volseg.class_frequencies``); ``None``:
        unknown, no warning.
    ignore_id
        The ignore id in use (``None``: none, no warning).
    name
        How the message names the volume.

    Returns
    -------
    str or None
        The warning (one line), or ``None`` when the ids present are not exactly
        ``{0, ignore_id}``.
    """
    if not frequencies or ignore_id is None:
        return None
    present = {int(k) for k, v in frequencies.items() if v}
    if present != {0, ignore_id}:
        return None
    return (f"{name} hold only the ids 0 and {ignore_id}, and {ignore_id} is the ignore id "
            f"(not annotated): training and evaluation would leave out every voxel of "
            f"{ignore_id}; if {ignore_id} is a class, map it to a class id (volseg convert "
            f"--map {ignore_id}=1, a workflow's labels values: {{{ignore_id}: 1}}, or train's "
            f"label_map)")
