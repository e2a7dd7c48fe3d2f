"""The one class-colour table: label images, probability channels and previews share it.

Class id ``i`` is drawn in ``PALETTE[i % len(PALETTE)]`` (tab10 without its grey, so
that the ignore id and the background never look like a class).  The ignore id
("not annotated") has no colour: it is transparent in viewers and uncoloured in the
preview PNGs.  :mod:`volseg.io.omezarr` writes these colours into the NGFF
``image-label`` ``colors`` of semantic label images and the ``omero`` channel
colours of probability images; :mod:`volseg.preview` blends them over slices.

Examples
--------
>>> class_rgba(2)
(44, 160, 44, 255)
>>> hex_colour(0)
'1F77B4'
"""

from __future__ import annotations

from collections.abc import Sequence

PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207),
)
"""RGB (0-255) of class ids 0, 1, 2, ... (cycled)."""

IGNORE_NAME = "not annotated"
"""Name given to the ignore id in label metadata."""


def class_rgb(label: int) -> tuple[int, int, int]:
    """Return the RGB colour (0-255) of class id ``label``."""
    return PALETTE[int(label) % len(PALETTE)]


def class_rgba(label: int) -> tuple[int, int, int, int]:
    """Return the opaque RGBA colour (0-255) of class id ``label``."""
    r, g, b = class_rgb(label)
    return (r, g, b, 255)


def class_rgb_float(label: int) -> tuple[float, float, float]:
    """Return the RGB colour of class id ``label`` in [0, 1] (for matplotlib)."""
    r, g, b = class_rgb(label)
    return (r / 255.0, g / 255.0, b / 255.0)


def hex_colour(label: int) -> str:
    """Return the colour of class id ``label`` as ``RRGGBB`` (OMERO channel colours)."""
    return "".join(f"{v:02X}" for v in class_rgb(label))


def label_table(
    names: Sequence[str], ignore_id: int | None = None
) -> list[tuple[int, str, tuple[int, int, int, int]]]:
    """Return ``(id, name, rgba)`` for every class id and the ignore id (transparent).

    Parameters
    ----------
    names
        Class names in id order (ids ``0 .. len(names) - 1``).
    ignore_id
        The "not annotated" id, or ``None``.  It must not be a class id.
    """
    rows = [(i, str(name), class_rgba(i)) for i, name in enumerate(names)]
    if ignore_id is not None:
        if 0 <= ignore_id < len(names):
            raise ValueError(f"ignore id {ignore_id} is also the class {names[ignore_id]!r}")
        rows.append((int(ignore_id), IGNORE_NAME, (0, 0, 0, 0)))
    return rows
