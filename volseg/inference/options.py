"""The options of a prediction: one frozen object for the library, the stage and ``volseg predict``.

:func:`volseg.inference.predict_logits` reads the sliding-window fields,
:func:`volseg.inference.pipeline.run_predict` all of them; the ``predict`` workflow
stage's config is this object plus its paths, and ``volseg predict``'s flags are
generated from its fields.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from volseg.ngff import DEFAULT_NGFF
from volseg.options import BlockChunks, NgffWritten, Options, PositiveSize3, Pyramid

__all__ = ["BACKENDS", "BLENDS", "BORDERS", "DEVICES", "PRECISIONS", "PROBABILITY_DTYPES",
           "PredictOptions"]

Blend = Literal["gaussian", "bump", "constant"]
Border = Literal["reflect", "symmetric", "edge", "constant"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16", "fp16"]
ProbabilityDtype = Literal["none", "uint8", "float16", "float32"]
Backend = Literal["auto", "torch", "onnx"]

BLENDS: tuple[str, ...] = ("gaussian", "bump", "constant")
BORDERS: tuple[str, ...] = ("reflect", "symmetric", "edge", "constant")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
PROBABILITY_DTYPES: tuple[str, ...] = ("none", "uint8", "float16", "float32")
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")


class PredictOptions(Options):
    """How a volume is predicted: patch geometry, blending, device, outputs.

    Attributes
    ----------
    patch_size
        ``(z, y, x)`` output window of one forward pass (default: the model's).
    overlap
        Fraction of the patch shared by neighbouring patches, in ``[0, 1)``; MONAI's
        grid (:class:`volseg.geometry.PatchGrid`).
    blend
        Patch weights: ``"gaussian"`` (MONAI's importance map), ``"bump"`` or
        ``"constant"``.
    sigma_scale
        Gaussian sigma as a fraction of the patch size.
    batch_size
        Patches per forward pass.
    device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``; resolved per worker.
    precision
        Autocast precision on CUDA (the CPU always runs fp32).
    tta
        Average the logits of flipped inputs (8 flips in 3-D, 4 in-plane in 2.5-D).
    block_size
        ``(z, y, x)`` blocks = output shards (default
        :func:`volseg.inference.default_block_size`: two patch strides per axis).  The
        result does not depend on it.
    border
        Centre-voxel networks: ``numpy.pad`` mode of the volume outside its border.
    cpu_threads
        Torch intra-op threads per forward pass on the CPU, set when a block runs
        (``None``: leave torch's setting).  Dask runs one block per core, so one
        thread keeps the cores busy with concurrent passes.
    probabilities
        How :func:`~volseg.inference.pipeline.run_predict` stores class probabilities:
        ``"uint8"`` (``round(255 p)``), ``"float16"``, ``"float32"`` or ``"none"``
        (not written).
    pyramid
        Also write the downsampled levels.
    ngff
        OME-Zarr version written: ``"0.5"`` (zarr v3, one shard per block) or
        ``"0.4"`` (zarr v2).
    chunks
        ``(z, y, x)`` zarr chunks (in 0.5 the inner chunks of the shards): the divisors
        of the block nearest to these (default 64³).
    backend
        How a model file or bioimage.io package runs: ``"torch"`` (TorchScript weights
        for packages), ``"onnx"`` (onnxruntime on the CPU), ``"auto"`` (torch; a
        package's TorchScript weights when it has them, else ONNX); see
        :func:`volseg.models.load_model`.
    """

    patch_size: PositiveSize3 | None = Field(
        None, description="patch (output window) z y x (default: the model's)")
    overlap: float = Field(0.25, ge=0, lt=1,
                           description="overlap of neighbouring patches, in [0, 1)")
    blend: Blend = Field("gaussian", description="patch blending weights (gaussian as MONAI)")
    sigma_scale: float = Field(0.125, gt=0,
                               description="gaussian sigma as a fraction of the patch")
    batch_size: int = Field(4, ge=1, description="patches per forward pass")
    device: Device = Field("auto", description="where the network runs (auto: CUDA when "
                                               "present)")
    precision: Precision = Field("fp32", description="autocast precision on CUDA (the CPU "
                                                     "always runs fp32)")
    tta: bool = Field(False, description="average the logits over flips (8 in 3-D, 4 "
                                         "in-plane in 2.5-D)")
    block_size: PositiveSize3 | None = Field(
        None, description="block (= output shard) z y x (default: two patch strides per "
                          "axis; multiples of the stride need the least memory)")
    border: Border = Field("reflect", description="centre-voxel networks: padding of the "
                                                  "volume outside its border")
    cpu_threads: int | None = Field(1, ge=1, description="torch threads per forward pass on "
                                                         "the CPU")
    probabilities: ProbabilityDtype = Field(
        "uint8", description="how class probabilities are stored: uint8 = round(255 p), "
                             "float16, float32, or none (not written)")
    pyramid: Pyramid = True
    ngff: NgffWritten = DEFAULT_NGFF
    chunks: BlockChunks = None
    backend: Backend = Field("auto", description="how the network runs: torch (TorchScript "
                                                 "for packages) or onnx (onnxruntime, CPU)")


WEIGHT_FORMATS: tuple[str, ...] = ("torchscript", "onnx")


WeightFormat = Literal["torchscript", "onnx"]


class Citation(Options):
    """A citation: free text plus a DOI (``10.xxxx/...``) or an http(s) URL."""

    text: str = Field(description="free text, e.g. authors, title, journal, year")
    doi: str | None = Field(None, description="DOI, 10.xxxx/...")
    url: str | None = Field(None, description="http(s) URL (when there is no DOI)")


class PackageOptions(Options):
    """Options of :func:`export_model` (``volseg export-model`` and the ``export_model`` stage).

    Attributes
    ----------
    name, description
        The package's name (default from the architecture and classes) and one-line
        description (default generated).
    authors
        ``"Name"`` or ``"Name; Affiliation"`` each.
    license
        SPDX licence id (e.g. ``"CC-BY-4.0"``, ``"MIT"``).
    cite
        Citations (text plus DOI or URL).
    covers
        Cover images (PNG/JPEG; e.g. the workflow's ``preview/xy.png``); default: the
        test input's middle section beside it with the predicted classes.
    sample
        The image the test input is cut from (its centre); default: the training
        image recorded in the model, else a synthetic image.
    weights
        Formats to write: ``torchscript`` and/or ``onnx``.
    state_dict
        Also write ``pytorch_state_dict`` weights (a pickle: volseg never reads them;
        for consumers that need them), with a warning.
    """

    name: str | None = Field(None, description="package name (default: architecture and "
                                               "classes)")
    description: str | None = Field(None, description="one-line description (default "
                                                      "generated)")
    authors: list[str] = Field(default_factory=list,
                               description="authors, 'Name' or 'Name; Affiliation' each")
    license: str | None = Field(None, description="licence of the weights, an SPDX id such "
                                                  "as CC-BY-4.0 or MIT")
    cite: list[Citation] = Field(default_factory=list, description="citations")
    covers: list[str] = Field(default_factory=list,
                              description="cover images, e.g. a workflow's preview/xy.png "
                                          "(default: made from the test tensors)")
    sample: str | None = Field(None, description="image the test input is cut from "
                                                 "(default: the training image recorded in "
                                                 "the model, else a synthetic one)")
    weights: list[WeightFormat] = Field(["torchscript", "onnx"], min_length=1,
                                        description="weight formats to write")
    state_dict: bool = Field(False, description="also write pytorch_state_dict weights: a "
                                                "PICKLE, which volseg never loads")

