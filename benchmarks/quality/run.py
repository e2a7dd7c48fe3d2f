"""Quality benchmarks of ``volseg train``: train with the real CLI, score held-out data.

Usage (from the repository root)::

    .venv/bin/python benchmarks/quality/run.py phantom   # synthetic FIB-SEM, 3 annotated slices
    .venv/bin/python benchmarks/quality/run.py lucchi    # real FIB-SEM mitochondria
    .venv/bin/python benchmarks/quality/run.py vnc       # real ssTEM, 2.5-D

Each case

1. prepares its inputs under ``runs/quality/<case>/`` (git-ignored; the phantom is
   written as OME-Zarr with ``labels/annotation`` and ``labels/truth``; the real data
   are read in place from ``../shared/data``),
2. runs ``python -m volseg train benchmarks/quality/<case>.yaml -o runs/quality/<case>``
   as a subprocess and measures its wall time,
3. predicts the held-out region with :func:`volseg.inference.predict_logits` from the
   saved ``model.safetensors`` (the path ``volseg predict`` takes) and scores it against
   the full ground truth,
4. writes ``benchmarks/results/quality_<case>.json`` and ``.md``.

``--skip-train`` re-scores an existing model; ``--set KEY=VALUE`` is passed to
``volseg train``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RESULTS = ROOT / "benchmarks" / "results"
DATA = Path("..") / "shared" / "data"  # relative to the repository root


# -- ground truth and held-out regions -------------------------------------------------
def _phantom_prepare(work: Path) -> None:
    from volseg.io.omezarr import write_image, write_labels
    from volseg.synth import fibsem

    target = work / "image.ome.zarr"
    if (target / "labels" / "truth").exists():
        return
    ph = fibsem((128, 256, 256), seed=0, annotated_slices=3)
    write_image(ph.image, target, voxel_size=ph.voxel_size, overwrite=True, pyramid=False)
    write_labels(ph.annotation, target, "annotation", voxel_size=ph.voxel_size,
                 overwrite=True, pyramid=False)
    write_labels(ph.truth, target, "truth", voxel_size=ph.voxel_size, overwrite=True,
                 pyramid=False)
    (work / "phantom.json").write_text(json.dumps(
        {"class_names": ph.class_names, "annotated_slices": ph.annotated_slices}))


def _lut(label_map: dict[int, int] | None) -> np.ndarray | None:
    if not label_map:
        return None
    lut = np.full(256, 255, np.int32)
    for k, v in label_map.items():
        lut[int(k)] = v
    return lut


CASES: dict[str, dict[str, Any]] = {
    "phantom": {
        "config": "phantom.yaml",
        "truth": "runs/quality/phantom/image.ome.zarr/labels/truth",
        "select": "not_annotated",  # every section but the annotated ones
        "targets": {"macro_f1": 0.90},
    },
    "lucchi": {
        "config": "lucchi.yaml",
        "truth": str(DATA / "lucchi" / "training_groundtruth.tif"),
        "select": (130, 165),
        "targets": {"iou[mitochondrion]": 0.85},
    },
    "vnc": {
        "config": "vnc.yaml",
        "truth": str(DATA / "vnc" / "stack1-labels.tif"),
        "select": (16, 20),
        "targets": {},
    },
}


def _scores(cm: np.ndarray, names: list[str]) -> dict[str, Any]:
    from volseg.train.evaluate import scores

    return scores(cm, names)


def evaluate(case: str, work: Path, tta: bool = False) -> dict[str, Any]:
    """Predict the held-out sections with the saved model and score them.

    ``tta`` averages the logits over flips (``volseg predict --tta``).
    """
    import dask
    import torch

    from volseg.inference import PredictOptions, predict_logits
    from volseg.io import open_volume
    from volseg.models import load_model
    from volseg.train.config import load_train_config
    from volseg.train.evaluate import confusion_matrix

    info = CASES[case]
    cfg = load_train_config(HERE / info["config"])
    model_path = work / cfg.model_path
    _, spec = load_model(model_path)
    image, _ = open_volume(cfg.image)
    truth, _ = open_volume(info["truth"])
    depth = image.shape[0]
    if info["select"] == "not_annotated":
        annotated = json.loads((work / "phantom.json").read_text())["annotated_slices"]
        sections = [z for z in range(depth) if z not in annotated]
        z0, z1 = 0, depth
    else:
        z0, z1 = info["select"]
        sections = list(range(z0, z1))
    # image context for the held-out sections (as `volseg predict` on the volume would see)
    margin = max(spec.halo[0]) + spec.patch_size[0]
    a, b = max(0, z0 - margin), min(depth, z1 + margin)
    torch.set_num_threads(int(os.environ.get("VOLSEG_THREADS", "2")))
    t0 = time.perf_counter()
    # synchronous below: one forward at a time with the threads set here
    logits = predict_logits(image[a:b], str(model_path),
                            PredictOptions(batch_size=4, device="cpu", tta=tta, cpu_threads=None))
    with dask.config.set(scheduler="synchronous"):
        pred = np.asarray(logits.argmax(axis=0).compute())
    seconds_predict = time.perf_counter() - t0
    lut = _lut(cfg.label_map)
    truth_np = np.asarray(truth[a:b].compute())
    truth_np = lut[truth_np] if lut is not None else truth_np.astype(np.int32)
    keep = [z - a for z in sections]
    cm = confusion_matrix(
        pred[keep], truth_np[keep], n_classes=len(spec.classes), ignore_id=cfg.ignore_id
    )
    result = _scores(cm, list(spec.classes))
    result["confusion"] = cm.tolist()
    if info["select"] == "not_annotated":
        skipped = sorted(set(range(depth)) - set(sections))
        result["evaluated_sections"] = f"all {len(sections)} sections except {skipped}"
    else:
        result["evaluated_sections"] = f"sections {sections[0]}..{sections[-1]}"
    result["seconds_predict"] = round(seconds_predict, 1)
    result["tta"] = tta
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--workdir", default=None, help="default runs/quality/<case>")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument(
        "--tta", action="store_true", help="evaluate with test-time flips (volseg predict --tta)"
    )
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    work = Path(args.workdir or f"runs/quality/{args.case}")
    work.mkdir(parents=True, exist_ok=True)
    if args.case == "phantom":
        t0 = time.perf_counter()
        _phantom_prepare(work)
        prepare = time.perf_counter() - t0
    else:
        prepare = 0.0
    config = HERE / CASES[args.case]["config"]
    cmd = [
        sys.executable,
        "-m",
        "volseg",
        "train",
        str(config.relative_to(ROOT)),
        "-o",
        str(work),
        "--overwrite",
        *[f"--set={o}" for o in args.overrides],
    ]
    train_seconds = None
    load_before = os.getloadavg()
    if not args.skip_train:
        print("+", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False)
        train_seconds = time.perf_counter() - t0
        if proc.returncode:
            print(f"volseg train failed with status {proc.returncode}", file=sys.stderr)
            return proc.returncode
    load_after = os.getloadavg()
    from volseg.models import read_spec

    spec = read_spec(work / "model.safetensors")
    quality = evaluate(args.case, work, tta=args.tta)
    training = spec.training
    result = {
        "case": args.case,
        "command": " ".join(
            [
                "python",
                "benchmarks/quality/run.py",
                args.case,
                *[f"--set {o}" for o in args.overrides],
                *(["--tta"] if args.tta else []),
            ]
        ),
        "train_command": " ".join(["volseg", *cmd[3:]]),
        "model": {
            "architecture": spec.architecture,
            "params": spec.params,
            "patch_size": spec.patch_size,
            "kind": spec.kind,
            "normalization": spec.normalization.model_dump(),
        },
        "train_wall_seconds": None if train_seconds is None else round(train_seconds, 1),
        "train_loop_seconds": training.get("seconds_training"),
        "prepare_seconds": round(prepare, 1),
        "best_epoch": training.get("best_epoch"),
        "epochs_run": training.get("epochs_run"),
        "stopped": training.get("stopped"),
        "validation_during_training": training.get("best_metrics"),
        "train_sections": training.get("train_sections"),
        "validation_sections": training.get("validation_sections"),
        "heldout": quality,
        "targets": CASES[args.case]["targets"],
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": training.get("threads"),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    met = {}
    for key, target in CASES[args.case]["targets"].items():
        if key.startswith("iou["):
            value = quality["per_class"][key[4:-1]]["iou"]
        else:
            value = quality[key]
        met[key] = {"value": value, "target": target, "met": bool(value >= target)}
    result["targets_met"] = met
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"quality_{args.case}{args.tag}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (RESULTS / f"{stem}.md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


def _markdown(r: dict[str, Any]) -> str:
    q = r["heldout"]
    lines = [
        f"# Quality: {r['case']}",
        "",
        f"- command: `{r['command']}` (runs `{r['train_command']}`)",
        f"- model: {r['model']['architecture']} {json.dumps(r['model']['params'])}, "
        f"patch {r['model']['patch_size']}",
        f"- training wall time: {r['train_wall_seconds']} s (loop {r['train_loop_seconds']} s), "
        f"best epoch {r['best_epoch']} of {r['epochs_run']} ({r['stopped']})",
        f"- train sections {r['train_sections']}, validation {r['validation_sections']}",
        f"- held-out evaluation: {q['evaluated_sections']}; prediction {q['seconds_predict']} s "
        "with `volseg.inference.predict_logits`",
        f"- machine: {r['machine']['cpu_count']} CPUs shared (load average "
        f"{r['machine']['loadavg_before'][0]:.1f} -> {r['machine']['loadavg_after'][0]:.1f}), "
        f"torch threads {r['machine']['torch_threads']}",
        "",
        f"**macro F1 {q['macro_f1']:.4f}, macro IoU {q['macro_iou']:.4f}, "
        f"accuracy {q['accuracy']:.4f}**",
        "",
        "| class | F1 | IoU | precision | recall | support |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in q["per_class"].items():
        lines.append(
            f"| {name} | {s['f1']:.4f} | {s['iou']:.4f} | {s['precision']:.4f} | "
            f"{s['recall']:.4f} | {s['support']} |"
        )
    if r["targets_met"]:
        lines += ["", "| target | value | required | met |", "|---|---|---|---|"]
        for k, v in r["targets_met"].items():
            lines.append(f"| {k} | {v['value']:.4f} | {v['target']} | {v['met']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
