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
    # select: the scored sections (seen by no training sample and by no choice);
    # tune: where thresholds and post-processing are picked (the model's validation
    # sections, never the scored ones); foreground: the class of a two-class target
    "phantom": {
        "config": "phantom.yaml",
        "truth": "runs/quality/phantom/image.ome.zarr/labels/truth",
        "select": "not_annotated",  # every section but the annotated ones
        "tune": (64, 65),  # the validation section (annotated, selects the model)
        "targets": {"macro_f1": 0.93, "f1[vesicle]": 0.85},
    },
    "lucchi": {
        "config": "lucchi.yaml",
        "truth": str(DATA / "lucchi" / "training_groundtruth.tif"),
        "select": (130, 165),
        "tune": (120, 130),
        "foreground": 1,
        "targets": {"iou[mitochondrion]": 0.90},
    },
    "vnc": {
        "config": "vnc.yaml",
        "truth": str(DATA / "vnc" / "stack1-labels.tif"),
        "select": (16, 20),
        "tune": (15, 16),
        "anisotropic": True,
        "targets": {"macro_f1": 0.80},
    },
    "isbi": {
        "config": "isbi.yaml",
        "truth": str(DATA / "isbi2012" / "train-labels.tif"),
        "select": (25, 30),
        "tune": (20, 25),
        "foreground": 1,  # membrane
        "anisotropic": True,
        "instances": True,  # cells = connected components of the interior, per section
        "targets": {},
    },
}


def _scores(cm: np.ndarray, names: list[str]) -> dict[str, Any]:
    from volseg.train.evaluate import scores

    return scores(cm, names)


def _target_value(quality: dict[str, Any], key: str) -> float:
    """``iou[c]`` / ``f1[c]``: a class's score; else a top-level figure (``macro_f1``)."""
    if "[" in key:
        metric, name = key[:-1].split("[")
        return float(quality["per_class"][name][metric])
    return float(quality[key])


def _sections(case: str, work: Path, depth: int) -> tuple[list[int], list[int]]:
    """(scored sections, tuning sections) of a case."""
    info = CASES[case]
    if info["select"] == "not_annotated":
        annotated = json.loads((work / "phantom.json").read_text())["annotated_slices"]
        scored = [z for z in range(depth) if z not in annotated]
    else:
        scored = list(range(*info["select"]))
    return scored, list(range(*info["tune"]))


def predict_region(case: str, work: Path, *, tta_too: bool) -> tuple[Any, list[int], list[int]]:
    """Softmax probabilities of the sections a case scores and tunes on (plus context).

    The prediction is :func:`volseg.inference.predict_logits` on the image (with the
    context ``volseg predict`` on the whole volume would see), i.e. the path of
    ``volseg predict``; ``tta_too`` also predicts with flips (``--tta``).
    """
    import dask
    import torch
    from levers import Region

    from volseg.inference import PredictOptions, predict_logits
    from volseg.io import open_volume
    from volseg.models import load_model
    from volseg.train.config import load_train_config

    info = CASES[case]
    cfg = load_train_config(HERE / info["config"])
    model_path = work / cfg.model_path
    _, spec = load_model(model_path)
    image, _ = open_volume(cfg.image)
    truth, _ = open_volume(info["truth"])
    depth = image.shape[0]
    scored, tune = _sections(case, work, depth)
    z0, z1 = min(scored + tune), max(scored + tune) + 1
    margin = max(spec.halo[0]) + spec.patch_size[0]
    a, b = max(0, z0 - margin), min(depth, z1 + margin)
    torch.set_num_threads(int(os.environ.get("VOLSEG_THREADS", "2")))
    probs = {}
    seconds = {}
    for tta in ([False, True] if tta_too else [False]):
        t0 = time.perf_counter()
        logits = predict_logits(image[a:b], str(model_path), PredictOptions(
            batch_size=4, device="cpu", tta=tta, cpu_threads=None))
        with dask.config.set(scheduler="synchronous"):  # one forward at a time
            lg = np.asarray(logits.compute(), dtype=np.float32)
        seconds[tta] = round(time.perf_counter() - t0, 1)
        lg -= lg.max(axis=0, keepdims=True)
        np.exp(lg, out=lg)
        lg /= lg.sum(axis=0, keepdims=True)
        probs[tta] = lg
    lut = _lut(cfg.label_map)
    truth_np = np.asarray(truth[a:b].compute())
    truth_np = lut[truth_np] if lut is not None else truth_np.astype(np.int32)
    region = Region(start=a, probabilities=probs[False],
                    probabilities_tta=probs.get(True, probs[False]),
                    truth=truth_np, image=np.asarray(image[a:b].compute()))
    return (region, spec, cfg, seconds), scored, tune


def _semantic(labels: np.ndarray, truth: np.ndarray, names: list[str], ignore_id: int
              ) -> dict[str, Any]:
    from volseg.train.evaluate import confusion_matrix

    cm = confusion_matrix(labels, truth, n_classes=len(names), ignore_id=ignore_id)
    result = _scores(cm, names)
    result["confusion"] = cm.tolist()
    return result


def _components_per_section(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """2-D connected components of each section, ids unique over the stack (0: none)."""
    from scipy import ndimage

    out = np.zeros(mask.shape, np.uint64)
    offset = 0
    for z in range(mask.shape[0]):
        cc, n = ndimage.label(mask[z])
        out[z] = np.where(cc > 0, cc.astype(np.uint64) + offset, 0)
        offset += n
    return out, offset


def _cells(labels: np.ndarray, interior: int) -> np.ndarray:
    """Cells of a membrane map: 2-D components of the interior, grown over the membranes."""
    from skimage.segmentation import expand_labels

    cells, _ = _components_per_section(labels == interior)
    return np.stack([expand_labels(c, distance=max(labels.shape[1:])) for c in cells])


def _instance_scores(labels: np.ndarray, truth: np.ndarray, interior: int) -> dict[str, Any]:
    """VOI and adapted Rand of the predicted cells against the true cells (ISBI style)."""
    from volseg.metrics.connectomics import adapted_rand, variation_of_information
    from volseg.metrics.contingency import contingency_block

    truth_cells, n_truth = _components_per_section(truth == interior)
    table = contingency_block(truth_cells, _cells(labels, interior))
    split, merge = variation_of_information(table)  # truth membranes (id 0) left out
    rand = adapted_rand(table)
    return {"voi_split": split, "voi_merge": merge, "voi": split + merge,
            "adapted_rand_error": rand.error, "cells_truth": int(n_truth),
            "definition": "2-D connected components of the interior per section; predicted "
                          "cells grown over predicted membranes; true membrane pixels left "
                          "out (truth id 0)"}


def evaluate(case: str, work: Path, *, tta: bool = False, levers: bool = False
             ) -> dict[str, Any]:
    """Predict the held-out sections with the saved model and score them.

    ``tta`` scores the flip-averaged prediction (``volseg predict --tta``); ``levers``
    walks the prediction-time levers of :mod:`levers`, each picked on the tuning
    sections, and adds their table.
    """
    from levers import Pipeline, default_levers, labels_of, measure_levers

    info = CASES[case]
    (region, spec, cfg, seconds), scored, tune = predict_region(
        case, work, tta_too=tta or levers)
    names = list(spec.classes)
    vs = cfg.voxel_size or (1.0, 1.0, 1.0)
    base = labels_of(region, Pipeline(tta=tta), vs, {})
    held = region.rows(scored)
    result = _semantic(base[held], region.truth[held], names, cfg.ignore_id)
    if info.get("instances"):
        result["instances"] = _instance_scores(base[held], region.truth[held], 0)
    if info["select"] == "not_annotated":
        skipped = sorted(set(range(region.start, region.start + len(base))) - set(scored))
        result["evaluated_sections"] = f"all {len(scored)} sections except {skipped}"
    else:
        result["evaluated_sections"] = f"sections {scored[0]}..{scored[-1]}"
    result["seconds_predict"] = seconds[False]
    result["seconds_predict_tta"] = seconds.get(True)
    result["tta"] = tta
    if levers:
        targets = list(info["targets"]) or ["f1[membrane]"]
        key = targets[0]

        def details(labels: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
            d = _semantic(labels, truth, names, cfg.ignore_id)
            if info.get("instances"):
                d["instances"] = _instance_scores(labels, truth, 0)
            return d

        def score(labels: np.ndarray, truth: np.ndarray) -> float:
            return _target_value(_semantic(labels, truth, names, cfg.ignore_id), key)

        result["levers"] = measure_levers(
            region, tune_sections=tune, score_sections=scored, score=score, details=details,
            levers=default_levers("foreground" in info, bool(info.get("anisotropic"))),
            voxel_size=vs)
        result["levers"]["metric"] = key
    return result


def cli_check(case: str, work: Path) -> dict[str, Any]:
    """``volseg predict`` + ``volseg evaluate`` on the validation sections vs training's figure.

    Two runs of the real commands (``convert``, ``predict``, ``evaluate``) with the saved
    model: (1) on the validation slab alone, which is what training validates on (every
    sample reads only inside its region, context mirrored at the slab's faces), so the
    macro F1 must equal the training record's; (2) on the whole volume, scoring the same
    sections: the slab's outer sections then see their real neighbours, so the figure
    may differ slightly.
    """
    from volseg.io import open_volume
    from volseg.models import read_spec
    from volseg.train.config import load_train_config

    info = CASES[case]
    cfg = load_train_config(HERE / info["config"])
    spec = read_spec(work / cfg.model_path)
    (val,) = spec.training["validation_sections"]
    cli = work / "cli"
    cli.mkdir(parents=True, exist_ok=True)
    vol = [sys.executable, "-m", "volseg"]
    maps = [f"--map={k}={v}" for k, v in (cfg.label_map or {}).items()]
    voxel = [str(v) for v in (cfg.voxel_size or (1, 1, 1))]
    slab_image, slab_truth = cli / "slab-image.npy", cli / "slab-truth.npy"
    np.save(slab_image, np.asarray(open_volume(cfg.image)[0][val[0]:val[1]].compute()))
    np.save(slab_truth, np.asarray(open_volume(info["truth"])[0][val[0]:val[1]].compute()))
    out: dict[str, Any] = {"sections": val,
                           "training_validation": {"macro_f1": spec.training["best_metrics"]
                                                   .get("macro_f1")}}
    t0 = time.perf_counter()
    for name, image_in, truth_in, z_range in (
            ("slab", str(slab_image), str(slab_truth), []),
            ("volume", cfg.image, info["truth"], ["--z-range", str(val[0]), str(val[1])])):
        image = cli / f"{name}.ome.zarr"
        steps = [
            [*vol, "convert", image_in, str(image), "--voxel-size", *voxel, "--overwrite"],
            [*vol, "convert", truth_in, "--labels-of", str(image), "--name", "truth", *maps,
             "--overwrite"],
            [*vol, "predict", "--model", str(work / cfg.model_path), "--input", str(image),
             "--output", str(cli / f"{name}-prediction.ome.zarr"), "--overwrite"],
            [*vol, "evaluate", "--prediction",
             str(cli / f"{name}-prediction.ome.zarr/labels/semantic"),
             "--truth", str(image / "labels" / "truth"), "--ignore-label", str(cfg.ignore_id),
             "--classes", *spec.classes, *z_range, "--report", str(cli / f"{name}-report"),
             "--overwrite"],
        ]
        for cmd in steps:
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        report = json.loads((cli / f"{name}-report" / "metrics.json").read_text())
        per = report["semantic"]["per_class"] if "semantic" in report else report["per_class"]
        present = [v["f1"] for v in per.values() if v["support"] > 0]
        out[name] = {"commands": [" ".join(["volseg", *c[3:]]).replace(str(work), "WORK")
                                  for c in steps],
                     "macro_f1": float(np.mean(present)), "per_class": per}
    out["slab_equals_training"] = bool(
        abs(out["slab"]["macro_f1"] - out["training_validation"]["macro_f1"]) < 1e-6)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


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
    parser.add_argument("--levers", action="store_true",
                        help="also measure the prediction-time levers (picked on the tuning "
                             "sections)")
    parser.add_argument("--cli-check", action="store_true",
                        help="also run volseg convert/predict/evaluate on the validation "
                             "sections and compare with the training record")
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
    stem = f"quality_{args.case}{args.tag}"
    earlier: dict[str, Any] = {}
    if args.skip_train and (RESULTS / f"{stem}.json").exists():
        earlier = json.loads((RESULTS / f"{stem}.json").read_text())  # the training's figures
    quality = evaluate(args.case, work, tta=args.tta, levers=args.levers)
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
                *(["--levers"] if args.levers else []),
                *(["--cli-check"] if args.cli_check else []),
                *(["--skip-train"] if args.skip_train else []),
                *([f"--tag {args.tag}"] if args.tag else []),
            ]
        ),
        # a re-score keeps the command the model was trained with
        "train_command": earlier.get("train_command") or " ".join(["volseg", *cmd[3:]]),
        "model": {
            "architecture": spec.architecture,
            "params": spec.params,
            "patch_size": spec.patch_size,
            "kind": spec.kind,
            "normalization": spec.normalization.model_dump(),
        },
        "train_wall_seconds": earlier.get("train_wall_seconds") if train_seconds is None
        else round(train_seconds, 1),
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
            "loadavg_before": earlier.get("machine", {}).get("loadavg_before", load_before)
            if args.skip_train else load_before,
            "loadavg_after": earlier.get("machine", {}).get("loadavg_after", load_after)
            if args.skip_train else load_after,
            "loadavg_scoring": os.getloadavg(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    if args.cli_check:
        result["cli_check"] = cli_check(args.case, work)
    final = quality["levers"]["final"]["heldout_scores"] if args.levers else quality
    met = {}
    for key, target in CASES[args.case]["targets"].items():
        value = _target_value(final, key)
        met[key] = {"value": value, "target": target, "met": bool(value >= target),
                    "with": "the levers kept on the tuning sections" if args.levers else
                    "the plain prediction"}
    result["targets_met"] = met
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str) + "\n"
    markdown = _markdown(result)
    above = work.resolve().parents  # a --workdir in another checkout: <root>/runs/quality/<case>
    for root in {str(ROOT) + os.sep, *([str(above[2]) + os.sep] if len(above) > 2 else [])}:
        text, markdown = text.replace(root, ""), markdown.replace(root, "")  # no machine paths
    (RESULTS / f"{stem}.json").write_text(text)
    (RESULTS / f"{stem}.md").write_text(markdown)
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
    if "instances" in q:
        i = q["instances"]
        lines += ["", f"Cells ({i['definition']}): VOI {i['voi']:.3f} (split "
                  f"{i['voi_split']:.3f}, merge {i['voi_merge']:.3f}), adapted Rand error "
                  f"{i['adapted_rand_error']:.4f}, {i['cells_truth']} true cells"]
    if "levers" in q:
        lv = q["levers"]
        lines += ["", f"Levers ({lv['metric']}; each setting picked on sections "
                  f"{lv['tune_sections'][0]}-{lv['tune_sections'][1]}, scored on "
                  f"{lv['score_sections'][0]}-{lv['score_sections'][1]}):", "",
                  "| lever | best setting (tuning) | tuning | held-out | kept |",
                  "|---|---|---|---|---|"]
        for row in lv["rows"]:
            lines.append(f"| {row['lever']} | {json.dumps(row['setting'])} | "
                         f"{row['tune']:.4f} | {row['heldout']:.4f} | {row['kept']} |")
        f = lv["final"]
        lines += ["", f"Kept pipeline: `{json.dumps(f['pipeline'])}` -> held-out "
                  f"{lv['metric']} **{f['heldout']:.4f}**"]
    if "cli_check" in r:
        c = r["cli_check"]
        lines += ["", f"CLI check (`volseg predict` + `volseg evaluate`, validation sections "
                  f"{c['sections']}): training's validation macro F1 "
                  f"{c['training_validation']['macro_f1']:.6f}; the commands on the slab "
                  f"alone {c['slab']['macro_f1']:.6f} (equal: {c['slab_equals_training']}), "
                  f"on the whole volume (real neighbours at the slab's faces) "
                  f"{c['volume']['macro_f1']:.6f}"]
    if r["targets_met"]:
        lines += ["", "| target | value | required | met |", "|---|---|---|---|"]
        for k, v in r["targets_met"].items():
            lines.append(f"| {k} | {v['value']:.4f} | {v['target']} | {v['met']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
