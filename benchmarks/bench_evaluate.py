"""Benchmark out-of-core evaluation: two generated label volumes read back from Zarr.

Two ``uint32`` instance volumes of ``--shape`` (default 1065 × 1536 × 2048 voxels,
z y x — the 2048 × 1536 × 1065 FIB-SEM stack, 3.35 G voxels each) are generated
blockwise and written to Zarr (zstd) under ``benchmarks/scratch/evaluate/`` (git-
ignored; reused when present with the same parameters):

* **truth** — warped-lattice cells: voxel ``(z, y, x)`` belongs to lattice cell
  ``floor((z + dz(y)) / 24), floor((y + dy(x)) / 48), floor((x + dx(z)) / 48)`` with
  smooth sinusoidal displacements (amplitude up to 9–14 voxels), so cells are
  instance-like blocks with curved faces (~60 k objects); 10 % of the cells are
  background 0.
* **prediction** — the same construction with perturbed displacement phases
  (boundaries moved by up to a few voxels), 12 % of cell pairs merged, 8 % of cells
  split in two, 3 % of cells missed (0).

Then, in a **fresh subprocess** (so its peak RSS is the evaluation's alone), one Dask
pass over the two Zarr arrays (threaded scheduler, ``--threads``) computes

* the instance metrics (sparse contingency table → VOI, adapted Rand, CREMI, object
  matching), and
* semantic metrics of 7 classes derived lazily from the same blocks (``id % 7``;
  truth cells with ``id % 11 == 0`` are unannotated: ignore label 255),

so each voxel of each volume is read from disk once.  Figures: wall time, CPU time,
voxels/s and the subprocess's peak RSS (``ru_maxrss``; target < 2 GiB).  With
``--check`` (small shapes only) the results are compared with scikit-image and
scikit-learn on the whole arrays.

Usage::

    .venv/bin/python benchmarks/bench_evaluate.py                      # full size
    .venv/bin/python benchmarks/bench_evaluate.py --shape 128 256 256 --check

Writes ``benchmarks/results/bench_evaluate[_<shape>].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SCRATCH as SCRATCH_ROOT
from _common import machine, run_measured, write_result

SCRATCH = SCRATCH_ROOT / "evaluate"
FULL_SHAPE = (1065, 1536, 2048)
CELL = (24, 48, 48)
N_CLASSES = 7
IGNORE = 255
GENERATOR_VERSION = 1


# ----------------------------------------------------------------------------- helpers


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _grid(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return tuple(-(-s // c) + 1 for s, c in zip(shape, CELL, strict=True))  # type: ignore[return-value]


def _tables(shape: tuple[int, ...], seed: int) -> dict[str, Any]:
    """Per-cell lookup tables of truth and prediction ids (small: one entry per cell)."""
    import numpy as np

    nz, ny, nx = _grid(shape)
    n = nz * ny * nx
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.uint32)
    truth = ids.copy()
    truth[rng.random(n) < 0.10] = 0
    pred = truth.copy()
    # merge: a cell with an even x index takes the id of its +x neighbour
    flat = np.arange(n)
    ix = flat % nx
    merge = (rng.random(n) < 0.12) & (ix % 2 == 0) & (ix + 1 < nx) & (truth > 0)
    pred[flat[merge]] = np.where(truth[flat[merge] + 1] > 0, truth[flat[merge] + 1], pred[merge])
    pred[(rng.random(n) < 0.03) & (truth > 0)] = 0  # missed objects
    # split: the upper half (in z) of a cell gets a new id
    upper = pred.copy()
    split = (rng.random(n) < 0.08) & (pred > 0)
    upper[split] = np.uint32(n + 1) + np.arange(int(split.sum()), dtype=np.uint32)
    return {"truth": truth, "pred": np.stack([pred, upper]), "grid": (nz, ny, nx)}


def _phases(seed: int) -> Any:
    import numpy as np

    return np.random.default_rng(seed).uniform(0, 2 * np.pi, 6)


def cell_block(
    block: Any,
    *,
    block_info: dict[Any, Any],
    lut: Any,
    grid: tuple[int, int, int],
    phases: Any,
    split: bool,
) -> Any:
    """Labels of one block: the lattice cell of every warped voxel, looked up in ``lut``.

    Each displacement depends on one other axis (``dz(y)``, ``dy(x)``, ``dx(z)``), so the
    three cell indices are 2-D arrays and only the final index and lookup are 3-D:
    cheap enough to generate 6.7 G voxels on two cores.
    """
    import numpy as np

    (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    f = np.float32
    z = np.arange(z0, z1, dtype=f)[:, None, None]
    y = np.arange(y0, y1, dtype=f)[None, :, None]
    x = np.arange(x0, x1, dtype=f)[None, None, :]
    tau = f(2 * np.pi)
    p = phases.astype(f)
    dz = f(6) * np.sin(y * tau / f(301) + p[0]) + f(3) * np.sin(y * tau / f(97) + p[1])
    dy = f(10) * np.sin(x * tau / f(389) + p[2]) + f(4) * np.sin(x * tau / f(113) + p[3])
    dx = f(10) * np.sin(z * tau / f(211) + p[4]) + f(4) * np.sin(z * tau / f(71) + p[5])
    nz, ny, nx = grid
    wz = z + dz + f(CELL[0])  # (Z, Y, 1); + one cell: displacements never go below 0
    iz = np.clip((wz // f(CELL[0])).astype(np.int32), 0, nz - 1)
    iy = np.clip(((y + dy + f(CELL[1])) // f(CELL[1])).astype(np.int32), 0, ny - 1)  # (1,Y,X)
    ix = np.clip(((x + dx + f(CELL[2])) // f(CELL[2])).astype(np.int32), 0, nx - 1)  # (Z,1,X)
    if split:  # the upper half in z of a cell is the second table
        iz = iz + (wz % f(CELL[0]) >= f(CELL[0] / 2)).astype(np.int32) * np.int32(nz)
    index = iz * np.int32(ny) + iy  # 3-D from here on
    index *= np.int32(nx)
    index += ix
    return np.take(lut.reshape(-1), index)


def generated(shape: tuple[int, int, int], chunks: tuple[int, int, int], seed: int) -> Any:
    """Lazy truth and prediction instance volumes (dask, built blockwise)."""
    import dask.array as da
    import numpy as np

    tables = _tables(shape, seed)
    template = da.zeros(shape, dtype=np.uint32, chunks=chunks)
    truth = template.map_blocks(
        cell_block, dtype=np.uint32, lut=tables["truth"], grid=tables["grid"],
        phases=_phases(seed), split=False, name="bench-truth",
    )  # fmt: skip
    pred = template.map_blocks(
        cell_block, dtype=np.uint32, lut=tables["pred"], grid=tables["grid"],
        phases=_phases(seed) + 0.05, split=True, name="bench-pred",
    )  # fmt: skip
    return truth, pred


def _verify(folder: Path) -> None:
    """Check that both arrays are complete (nothing removed the scratch files meanwhile)."""
    import zarr

    for name in ("truth", "prediction"):
        try:
            arr = zarr.open_array(str(folder / f"{name}.zarr"), mode="r")
        except Exception as exc:
            raise SystemExit(f"{folder / name}.zarr is unreadable ({exc}); rerun") from None
        if arr.nchunks_initialized != arr.nchunks:
            raise SystemExit(
                f"{folder / name}.zarr has {arr.nchunks_initialized} of {arr.nchunks} chunks "
                "(scratch files were removed while writing?); rerun"
            )


def write_volumes(
    shape: tuple[int, int, int], chunks: tuple[int, int, int], seed: int, threads: int
) -> dict[str, Any]:
    """Generate both volumes into Zarr under :data:`SCRATCH` (reused when up to date)."""
    import dask
    import zarr

    params = {"shape": list(shape), "chunks": list(chunks), "seed": seed,
              "generator": GENERATOR_VERSION}  # fmt: skip
    folder = SCRATCH / "x".join(map(str, shape))
    stamp = folder / "params.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        _verify(folder)
        return {"reused": True, "folder": str(folder)}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    truth, pred = generated(shape, chunks, seed)
    t0 = time.perf_counter()
    targets = []
    for name, arr in (("truth", truth), ("prediction", pred)):
        z = zarr.create_array(str(folder / f"{name}.zarr"), shape=shape, dtype="uint32",
                              chunks=chunks)  # fmt: skip
        targets.append(arr.store(z, lock=False, compute=False))
    with dask.config.set(scheduler="threads", num_workers=threads):
        dask.compute(*targets)
    seconds = time.perf_counter() - t0
    _verify(folder)
    stamp.write_text(json.dumps(params))
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"reused": False, "folder": str(folder), "seconds": seconds, "bytes_on_disk": size}


# ----------------------------------------------------------------------------- evaluation


def evaluate_from_zarr(folder: Path, threads: int, check: bool) -> dict[str, Any]:
    """The measured phase (runs in its own process): one Dask pass over both volumes."""
    import dask
    import dask.array as da
    import numpy as np

    from volseg.io import open_volume
    from volseg.metrics import evaluate

    rss0 = _peak_rss_mib()
    truth, _ = open_volume(folder / "truth.zarr")  # as `volseg evaluate` reads its inputs
    pred, _ = open_volume(folder / "prediction.zarr")
    sem_truth = da.where(truth % 11 == 0, np.uint8(IGNORE), (truth % N_CLASSES).astype(np.uint8))
    sem_pred = (pred % N_CLASSES).astype(np.uint8)
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=threads):
        result = evaluate(
            semantic={"prediction": sem_pred, "truth": sem_truth, "n_classes": N_CLASSES,
                      "ignore_label": IGNORE},
            instances={"prediction": pred, "truth": truth},
        )  # fmt: skip
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    out: dict[str, Any] = {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mib": _peak_rss_mib(),
        "rss_before_mib": rss0,
        "blocks": int(np.prod(truth.numblocks)),
        "chunks": list(truth.chunksize),
        "metrics": {
            "semantic": {k: result["semantic"][k] for k in ("accuracy", "cohen_kappa")}
            | {
                "macro_f1": result["semantic"]["macro"]["f1"],
                "ignored_voxels": result["semantic"]["ignored_voxels"],
            },
            "instances": {k: v for k, v in result["instances"].items() if k != "matching"},
        },
    }
    if check:
        out["check"] = _check(truth, pred, sem_truth, sem_pred, result)
    return out


def _check(truth: Any, pred: Any, sem_truth: Any, sem_pred: Any, result: dict) -> dict:
    """Compare with scikit-image / scikit-learn on the whole arrays (small shapes)."""
    import numpy as np
    from skimage.metrics import adapted_rand_error, variation_of_information
    from sklearn.metrics import cohen_kappa_score, f1_score

    t, p = np.asarray(truth), np.asarray(pred)
    st, sp = np.asarray(sem_truth), np.asarray(sem_pred)
    split, merge = variation_of_information(t, p, ignore_labels=(0,))
    are, _, _ = adapted_rand_error(t, p)
    keep = st != IGNORE
    inst, sem = result["instances"], result["semantic"]
    diffs = {
        "voi_split": abs(inst["voi_split"] - split),
        "voi_merge": abs(inst["voi_merge"] - merge),
        "adapted_rand_error": abs(inst["adapted_rand_error"] - are),
        "macro_f1": abs(sem["macro"]["f1"] - f1_score(st[keep], sp[keep], average="macro")),
        "cohen_kappa": abs(sem["cohen_kappa"] - cohen_kappa_score(st[keep], sp[keep])),
    }
    return {"max_abs_diff": max(diffs.values()), "diffs": diffs}


# ----------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=3, type=int, default=FULL_SHAPE, metavar=("Z", "Y", "X"))
    parser.add_argument("--chunks", nargs=3, type=int, default=(128, 256, 256),
                        metavar=("Z", "Y", "X"))  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare with scikit-image / scikit-learn (small shapes only)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the generated Zarr volumes (default: keep only small ones)",
    )
    parser.add_argument("--_evaluate", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._evaluate:  # the measured subprocess
        print(json.dumps(evaluate_from_zarr(Path(args._evaluate), args.threads, args.check)))
        return 0
    shape = tuple(args.shape)
    chunks = tuple(min(c, s) for c, s in zip(args.chunks, shape, strict=True))
    voxels = int(shape[0]) * int(shape[1]) * int(shape[2])
    if args.check and voxels > 64 * 2**20:
        parser.error("--check loads whole volumes: use a shape below 64 M voxels")
    print(f"generating 2 × {'×'.join(map(str, shape))} uint32 volumes "
          f"({2 * voxels / 1e6:,.1f} M voxels) in {SCRATCH} ...", flush=True)  # fmt: skip
    gen = write_volumes(shape, chunks, args.seed, args.threads)
    done = "reused" if gen["reused"] else "written in {:.1f} s".format(gen["seconds"])
    print(f"  {done}", flush=True)
    print("evaluating (fresh process) ...", flush=True)
    cmd = [sys.executable, __file__, "--_evaluate", gen["folder"], "--threads", str(args.threads)]
    if args.check:
        cmd.append("--check")
    measured = run_measured(cmd)
    if measured.returncode != 0:
        print(measured.stderr, file=sys.stderr)
        return measured.returncode
    ev = json.loads(measured.stdout.strip().splitlines()[-1])
    ev["process_wall_s"] = measured.seconds  # including interpreter start and graph building
    ev["peak_rss_tree_mib"] = measured.peak_rss_bytes / 2**20  # sampled by _common
    record = {
        "benchmark": "evaluate",
        "shape_zyx": list(shape),
        "voxels_per_volume": voxels,
        "threads": args.threads,
        "source": "zarr on disk (zstd), read out-of-core through volseg.io.open_volume; "
        "generated blockwise beforehand",
        "generation": gen,
        "evaluation": ev,
        "voxels_per_s": 2 * voxels / ev["wall_s"],
        "target_peak_rss_mib": 2048,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    suffix = "" if shape == FULL_SHAPE else "_" + "x".join(map(str, shape))
    target = write_result(f"bench_evaluate{suffix}", record)
    inst = ev["metrics"]["instances"]
    sem = ev["metrics"]["semantic"]
    rows = [
        ("volume (z y x)", f"{' × '.join(map(str, shape))}  ({voxels / 1e6:,.1f} M voxels each)"),
        ("blocks × chunk", f"{ev['blocks']} × {ev['chunks']}"),
        ("wall time", f"{ev['wall_s']:.1f} s  ({record['voxels_per_s'] / 1e6:.1f} M voxels/s)"),
        ("CPU time", f"{ev['cpu_s']:.1f} s on {args.threads} threads"),
        ("peak RSS (evaluation)", f"{max(ev['peak_rss_mib'], ev['peak_rss_tree_mib']):.0f} MiB"
         "  (target < 2048 MiB)"),
        ("objects truth / pred", f"{inst['n_true_objects']} / {inst['n_pred_objects']}"),
        ("VOI split / merge", f"{inst['voi_split']:.4f} / {inst['voi_merge']:.4f}"),
        ("ARAND error / prec / rec", " / ".join(
            f"{inst[k]:.4f}" for k in
            ("adapted_rand_error", "adapted_rand_precision", "adapted_rand_recall"))),
        ("CREMI / F1@0.5 / AP", " / ".join(
            f"{inst[k]:.4f}" for k in ("cremi_score", "f1_iou50", "ap"))),
        ("semantic acc / macro F1 / κ", " / ".join(
            f"{sem[k]:.4f}" for k in ("accuracy", "macro_f1", "cohen_kappa"))),
    ]  # fmt: skip
    if "check" in ev:
        rows.append(("max |diff| vs skimage/sklearn", f"{ev['check']['max_abs_diff']:.2e}"))
    print()
    for label, value in rows:
        print(f"{label:<32}{value}")
    print(f"\nwritten {target}")
    if not args.keep and voxels > 64 * 2**20:
        shutil.rmtree(gen["folder"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
