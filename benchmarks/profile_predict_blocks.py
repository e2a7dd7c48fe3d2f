"""Where ``volseg predict``'s block phase goes besides the network: a profile.

Runs ``volseg predict`` in this process on ``benchmarks/scratch/bench_predict``'s
``--shape`` image (made by ``bench_predict.py``) with a trivial network (UNet widths
2-2, no residual units: the forward passes cost little) and the block scheduler's
thread pool replaced by synchronous calls, so that :mod:`cProfile` sees every task:
reading, normalisation, the forward passes, the host copies of the logits, the
weighted overlap-add, merging the pieces, softmax / argmax / quantisation, level 1
and the shard encoding.  Prints and writes the functions by own time to
``benchmarks/results/profile_predict_blocks.txt``.

Usage::

    .venv/bin/python benchmarks/profile_predict_blocks.py [--shape 128 512 512]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, ROOT, SCRATCH


class _SyncPool:
    """A stand-in for ThreadPoolExecutor that runs each task at once, in this thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the scheduler as a task would
            future.set_exception(exc)
        return future

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        pass


def main() -> int:
    """Profile the block phase with a trivial network; print and write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs=3, type=int, default=[128, 512, 512])
    p.add_argument("--rows", type=int, default=30)
    args = p.parse_args()
    import torch

    import volseg.inference.stream as stream
    from volseg.cli import main as volseg_main
    from volseg.models import ModelSpec, Normalization, build_model, save_model

    work = SCRATCH / "bench_predict"
    image = work / f"image_{'x'.join(map(str, args.shape))}.ome.zarr"
    if not image.exists():
        print(f"{image} is missing: run bench_predict.py --shape {' '.join(map(str, args.shape))}"
              " first", file=sys.stderr)
        return 1
    spec = ModelSpec(architecture="unet3d",
                     params={"widths": [2, 2], "num_res_units": 0, "norm": "batch"},
                     classes=tuple(f"class{i}" for i in range(7)), patch_size=(64, 64, 64),
                     normalization=Normalization(mode="meanstd", mean=128.0, std=40.0))
    torch.manual_seed(0)
    model = work / "model_trivial_7.safetensors"
    save_model(build_model(spec).eval(), spec, model, overwrite=True)
    stream.ThreadPoolExecutor = _SyncPool  # type: ignore[misc,assignment]
    argv = ["predict", "--model", str(model), "--input", str(image), "--output",
            str(work / "profile.ome.zarr"), "--overwrite", "--device", "cpu"]
    profile = cProfile.Profile()
    profile.enable()
    status = volseg_main(argv)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.rows)
    text = out.getvalue().replace(str(ROOT) + "/", "")
    header = (f"volseg predict, {' x '.join(map(str, args.shape))}, 7 classes, trivial UNet "
              f"2-2, synchronous block tasks; load average {os.getloadavg()}\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "profile_predict_blocks.txt").write_text(header + text)
    print(header + text)
    return status


if __name__ == "__main__":
    sys.exit(main())
