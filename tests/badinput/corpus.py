"""The bad-input and fault corpus: tiny shared inputs and the refusal contract (helpers).

Every case runs a ``volseg`` command (in-process through :func:`volseg.cli.main`, or
in a real subprocess where the exit status, the stream or the process matters) and
asserts the contract of a refused run: exit status 2, exactly one line on stderr
(``volseg: error: ...``) naming what is wrong, no traceback, and — by hashing every
file before and after — nothing changed outside what the case allows.

The inputs (two tiny model files with different weights, a tiny image) are built once
per session and shared; their hashes are part of every case's "nothing changed".
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SHAPE = (16, 32, 32)
PATCH = (16, 16, 16)
#: Flags that keep a tiny prediction fast and its blocks small (4 blocks).
FAST = ["--device", "cpu", "--no-pyramid", "--block", "16", "16", "16"]


@dataclass(frozen=True)
class Inputs:
    """The shared inputs: ``folder`` holds them all."""

    folder: Path
    image: Path
    model: Path
    other_model: Path
    labels: Path
    probabilities: Path


def _model(path: Path, seed: int) -> Path:
    import torch

    from volseg.models import ModelSpec, Normalization, build_model, save_model

    spec = ModelSpec(architecture="unet3d", params={"widths": [4, 8], "num_res_units": 1},
                     classes=("bg", "membrane", "mito"), patch_size=PATCH,
                     normalization=Normalization(mode="meanstd", mean=110.0, std=25.0))
    torch.manual_seed(seed)
    return save_model(build_model(spec).eval(), spec, path)


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    """Two tiny models, a tiny image, a label image and a prediction (built once)."""
    from volseg.io.omezarr import write_image, write_label_image

    folder = tmp_path_factory.mktemp("badinput-inputs")
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(size=SHAPE) * 25 + 110, 0, 255).astype(np.uint8)
    image = folder / "image.ome.zarr"
    write_image(img, image, voxel_size=(8, 4, 4), chunks=(16, 16, 16))
    labels = folder / "labels.ome.zarr"
    write_label_image((img > 120).astype(np.uint8), labels, voxel_size=(8, 4, 4),
                      chunks=(16, 16, 16))
    model = _model(folder / "model.safetensors", 0)
    probabilities = folder / "prediction.ome.zarr"
    from volseg.cli import main

    assert main(["predict", "--model", str(model), "--input", str(image), "--output",
                 str(probabilities), *FAST]) == 0
    return Inputs(folder, image, model, _model(folder / "other.safetensors", 1), labels,
                  probabilities)


def hashes(*roots: Path, skip: Sequence[Path] = ()) -> dict[str, str]:
    """Return ``{path: sha256}`` of every file (and ``->target`` of every link) under roots.

    Folders are listed too (empty string), so a created or removed folder counts.
    ``skip``: paths whose contents may change (the intended output).
    """
    skipped = [os.path.realpath(p) for p in skip]
    out: dict[str, str] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if any(os.path.realpath(here) == s or os.path.realpath(here).startswith(s + os.sep)
                   for s in skipped):
                dirnames[:] = []
                continue
            out[str(here)] = ""
            for name in sorted(filenames + [d for d in dirnames if (here / d).is_symlink()]):
                path = here / name
                if any(os.path.realpath(path) == s for s in skipped):
                    continue
                if path.is_symlink():
                    out[str(path)] = "->" + os.readlink(path)
                elif path.is_file():
                    out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    out[str(path)] = "special"
    return out


#: A plain progress line (:mod:`volseg.progress`, off a terminal): printed when a
#: computation starts, so a fault met while computing follows one or more of them.
PROGRESS = re.compile(r"^volseg: .+: \d+/\d+ tasks \(\d+ %\), \d+ s$")


def check_stderr(err: str, message: str) -> None:
    """Assert the one-line error contract on captured stderr.

    Exactly one line ``volseg: error: ...`` (the last), containing ``message``, and no
    traceback; the only other lines allowed are progress lines of a computation that
    had started when the fault was met (off a terminal they are plain lines).
    """
    assert "Traceback" not in err, err
    assert err.endswith("\n"), err
    lines = err[:-1].split("\n")
    assert lines[-1].startswith("volseg: error: "), err
    assert all(PROGRESS.match(line) for line in lines[:-1]), err
    assert message in lines[-1], (message, err)


Refuse = Callable[..., str]


@pytest.fixture
def refused(inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Refuse:
    """Return ``refuse(argv, message, *, may_change=(), subprocess=False)``.

    Runs ``volseg argv`` and asserts: exit status 2, one stderr line containing
    ``message``, no traceback, and no file under the case's ``tmp_path`` or the shared
    inputs changed (except under ``may_change``).  Returns the stderr line.
    """
    def refuse(argv: Sequence[str], message: str, *, may_change: Sequence[Path] = (),
               in_subprocess: bool = False, env: dict[str, str] | None = None) -> str:
        from volseg.cli import main

        argv = [str(a) for a in argv]
        before = hashes(tmp_path, inputs.folder, skip=may_change)
        if in_subprocess:
            proc = subprocess.run([sys.executable, "-m", "volseg", *argv], capture_output=True,
                                  text=True, cwd=tmp_path, timeout=120,
                                  env={**os.environ, **(env or {})})
            code, err = proc.returncode, proc.stderr
        else:
            capsys.readouterr()
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's own errors
                code = int(exc.code or 0)
            err = capsys.readouterr().err
        assert code == 2, (argv, code, err)
        check_stderr(err, message)
        assert hashes(tmp_path, inputs.folder, skip=may_change) == before, argv
        log = os.environ.get("VOLSEG_CORPUS_LOG")  # to count the cases: one line each
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{argv[0]}\t{message}\n")
        return err

    return refuse


def predict(inputs: Inputs, output: Path, *more: str, model: Path | None = None) -> int:
    """Run ``volseg predict`` in-process on the shared image; return the exit status."""
    from volseg.cli import main

    return main(["predict", "--model", str(model or inputs.model), "--input",
                 str(inputs.image), "--output", str(output), *FAST, *more])


def interrupted(output: Path) -> None:
    """Make a finished output look like one interrupted after its first block.

    The markers of every storage chunk but the first are removed from the level-0 arrays
    of the image and its label images (of the only chunk, when there is one).
    """
    import zarr

    from volseg.io.store import forget_chunk

    levels = [output / "0", *(output / "labels").glob("*/0")]
    for level0 in levels:
        if level0.exists():
            array = zarr.open_array(str(level0), mode="r")
            grid = [-(-s // c) for s, c in zip(array.shape, array.shards or array.chunks,
                                               strict=True)]
            for index in np.ndindex(*grid):
                if any(index[-3:]) or all(n == 1 for n in grid[-3:]):
                    forget_chunk(array, index)
