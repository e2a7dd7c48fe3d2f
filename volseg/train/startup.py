"""The start-up the training commands share (``train``, ``pretrain``, ``weak``).

Before any data is read, :func:`start_run`

1. refuses every output (model files, images, folders of curves) that equals, lies
   inside or contains one of the command's inputs
   (:func:`volseg.io.guard.check_output_location`);
2. refuses to replace an existing model file volseg did not write, even with
   ``overwrite`` (:func:`check_replaceable_model`), and an existing image or
   folder volseg did not write (:func:`volseg.io.guard.check_replaceable`);
3. refuses an existing model file or image without ``overwrite``;
4. sets torch's intra-op threads (when asked), seeds torch and numpy, resolves the
   device and starts the clock.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from volseg.errors import InputError, OutputExistsError
from volseg.inference.predictor import resolve_device
from volseg.io.guard import check_output_location, check_replaceable
from volseg.io.location import PathLike

__all__ = ["RunStart", "check_replaceable_model", "start_run"]


@dataclass(frozen=True)
class RunStart:
    """What a training command starts with.

    Attributes
    ----------
    rng
        ``numpy.random.default_rng(seed)``.
    device
        The resolved torch device.
    started
        ``time.perf_counter()`` when the checks had passed.
    """

    rng: np.random.Generator
    device: torch.device
    started: float


def check_replaceable_model(path: Path) -> None:
    """Refuse to replace anything but a volseg model file (even with ``overwrite``).

    Raises
    ------
    OutputExistsError
        If ``path`` is a folder or a file :func:`volseg.models.files.read_spec` cannot
        read as a volseg model.
    """
    from volseg.models.files import read_spec

    try:
        if path.is_dir():
            raise InputError(f"{path} is a folder")
        read_spec(path)
    except InputError:
        raise OutputExistsError(f"{path} exists and is not a volseg model file; volseg "
                                f"replaces only its own models: choose another model_path or "
                                f"output folder, or remove it yourself") from None


def start_run(
    *,
    inputs: Sequence[PathLike | None],
    models: Sequence[Path] = (),
    images: Sequence[Path] = (),
    folders: Sequence[Path] = (),
    overwrite: bool = False,
    threads: int | None = None,
    seed: int = 0,
    device: str = "auto",
) -> RunStart:
    """Check a training command's outputs, then set threads, seeds and the device.

    Parameters
    ----------
    inputs
        The command's inputs (``None`` entries are skipped).
    models
        Model files it writes (replaced only if volseg wrote them, and with
        ``overwrite``).
    images
        OME-Zarr outputs it writes (the same rule, :func:`check_replaceable`).
    folders
        Folders it writes files into (curves, metrics): checked against the inputs.
    overwrite
        Replace existing model files and images (volseg's own only).
    threads
        Torch intra-op threads (``None`` or 0: torch's default).
    seed
        Seeds ``torch.manual_seed`` and the returned generator.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.

    Raises
    ------
    InputError
        An output overlaps an input.
    OutputExistsError
        An output exists and is foreign, or exists without ``overwrite``.
    """
    for output in (*models, *images, *folders):
        check_output_location(output, inputs)
    for path in models:
        if path.exists():
            check_replaceable_model(path)
            if not overwrite:
                raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    for path in images:
        if path.exists() or path.is_symlink():
            check_replaceable(path)
            if not overwrite:
                raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    resolved = resolve_device(device)
    return RunStart(rng=rng, device=resolved, started=time.perf_counter())
