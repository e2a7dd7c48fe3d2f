"""The base of every operation's options object, and the field types they share.

Each operation of volseg (predict, crf, instances, evaluate, convert, synth, train, ...)
has one frozen, validated options object defined beside it in the library
(:class:`volseg.inference.PredictOptions`, :class:`volseg.crf.CRFOptions`, ...).  The
library function takes it whole; the workflow stage's config *is* it (a subclass that
adds the stage's input and output paths); the command line's flags are generated from
its fields (:mod:`volseg.cli._options`).  So every option has one name, one type, one
default and one description.

>>> from volseg.options import Options
>>> class Blur(Options):
...     sigma: float = 1.0
>>> Blur(sigma=2).to_dict()
{'sigma': 2.0}
>>> Blur.from_dict({"sigma": 3.0}).sigma
3.0
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from volseg.ngff import Ngff

__all__ = ["BlockChunks", "NgffWritten", "Options", "PositiveSize3", "Pyramid", "VoxelSize3",
           "options_of"]

_O = TypeVar("_O", bound="Options")


class Options(BaseModel):
    """Base of the options objects: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_dict(self) -> dict[str, Any]:
        """Return the options as plain JSON-able data (tuples as lists)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls: type[_O], data: dict[str, Any]) -> _O:
        """Validate ``data`` into options (raises ``pydantic.ValidationError``)."""
        return cls.model_validate(data)


def options_of(cls: type[_O], source: BaseModel) -> _O:
    """Return the ``cls`` part of a model that carries all its fields (e.g. a stage config).

    A stage config is a subclass of its operation's options with paths added; this
    returns the plain options, e.g. for a record that should not repeat the paths.
    """
    if isinstance(source, cls) and type(source) is cls:
        return source
    return cls.model_validate({name: getattr(source, name) for name in cls.model_fields})


def _positive_sizes(value: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if value is not None and min(value) < 1:
        raise ValueError("sizes must be positive")
    return value


def _positive_voxel(value: tuple[float, ...] | None) -> tuple[float, ...] | None:
    if value is not None and min(value) <= 0:
        raise ValueError("voxel sizes must be positive")
    return value


#: ``(z, y, x)`` sizes in voxels, each at least 1.
PositiveSize3 = Annotated[tuple[int, int, int], AfterValidator(_positive_sizes)]
#: ``(z, y, x)`` voxel size in nanometres, each positive.
VoxelSize3 = Annotated[tuple[float, float, float], AfterValidator(_positive_voxel)]

# -- the output fields every operation that writes an OME-Zarr image block by block shares
# (predict, crf, instances, postprocess): one type, one description; the default is set
# where the field is declared, e.g. ``pyramid: Pyramid = True``.
#: Also write the downsampled levels of the output.
Pyramid = Annotated[bool, Field(description="write the downsampled levels")]
#: The OME-NGFF version of the output.
NgffWritten = Annotated[Ngff, Field(description="OME-NGFF version written: 0.5 = zarr v3 with "
                                                "one shard per block, 0.4 = zarr v2")]
#: The output's zarr chunks (in NGFF 0.5 the inner chunks of the one shard per block).
BlockChunks = Annotated[PositiveSize3 | None, Field(
    description="chunks z y x, the divisors of the block nearest these (default 64 64 64; in "
                "NGFF 0.5 the inner chunks of the shards)")]
