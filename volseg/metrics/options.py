"""The options of an evaluation (:class:`EvaluateOptions`), light to import: the command
line's ``--help`` reads them without importing dask.
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator

from volseg.options import Options

__all__ = ["DEFAULT_IGNORE_LABEL", "EvaluateOptions"]


#: Truth id of unannotated voxels unless told otherwise.
DEFAULT_IGNORE_LABEL = 255


class EvaluateOptions(Options):
    """How an evaluation counts: the ignore label, class names, zero division, z range.

    Attributes
    ----------
    ignore_label
        Truth id of unannotated voxels, left out of the semantic metrics (``None``:
        every voxel is evaluated).
    classes
        Class names in id order (default: the labels' ``volseg.class_names``
        attribute, else ``class_0``, ``class_1``, ...).
    zero_division
        Score of a class whose precision/recall/F1/IoU denominator is zero: 0, 1 or
        nan (as scikit-learn's ``zero_division``).
    z_range
        Evaluate only sections ``[start, stop)`` (e.g. the held-out part of a volume).
    """

    ignore_label: int | None = Field(
        DEFAULT_IGNORE_LABEL, ge=0,
        description="truth id of unannotated voxels, left out of semantic metrics "
                    "(none: evaluate every voxel)")
    classes: list[str] | None = Field(
        None, description="class names in id order (default: the labels' "
                          "volseg.class_names attribute, else class_0, class_1, ...)")
    zero_division: float = Field(
        0.0, description="score of a class whose precision/recall/F1/IoU denominator is "
                         "zero: 0, 1 or nan (as scikit-learn)")
    z_range: tuple[int, int] | None = Field(
        None, description="evaluate only sections START <= z < STOP (e.g. the held-out "
                          "ones)")

    @field_validator("zero_division")
    @classmethod
    def _zero_division(cls, value: float) -> float:
        if not (value in (0.0, 1.0) or math.isnan(value)):
            raise ValueError(f"zero_division must be 0, 1 or nan, got {value}")
        return value

