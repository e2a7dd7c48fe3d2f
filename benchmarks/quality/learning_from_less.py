"""Learning from less: pre-training + fine-tuning vs scratch, and weak labels from tags.

Usage (from the repository root; each part takes roughly 10-25 minutes on a loaded
2-core machine)::

    nice -n 10 .venv/bin/python benchmarks/quality/learning_from_less.py pretrain-phantom
    nice -n 10 .venv/bin/python benchmarks/quality/learning_from_less.py pretrain-lucchi
    nice -n 10 .venv/bin/python benchmarks/quality/learning_from_less.py weak
    .venv/bin/python benchmarks/quality/learning_from_less.py tables   # JSON -> Markdown

Pre-training (``pretrain-*``): for the centre-voxel CNN and the 2.5-D UNet, ``scratch``
trains on the sparse labels for ``PRE + FT`` seconds of wall clock; ``masked_centre``
and ``vae`` pre-train on the whole (unlabelled) volume for ``PRE`` seconds and
fine-tune (``train.init``) for ``FT`` seconds: equal budgets.  The phantom
(``fibsem`` 64 x 192 x 192, 7 classes) is annotated on 1 or 3 sections (+ one section
that only selects the kept model); Lucchi (a 165 x 384 x 384 crop) on sections 30 and
90 (+ section 120 for model selection).  Held-out score: the phantom's macro F1 over
its 7 classes on 6 sections away from every annotated one; Lucchi's mitochondrion IoU
on 6 sections of z 130-164.

Weak labels (``weak``): tags *derived from the ground truth* per 128 x 128 tile (the
classes present in the tile), on the em2d phantom and on the Lucchi crop; IoU of the
CAM pseudo-labels over the tagged tiles, and the held-out IoU of a 2.5-D UNet trained
on the pseudo-labels vs the same network trained on the full truth of the same
sections for the same time.

Every record carries ``os.getloadavg()`` before and after its run; the runs use the
library functions (``pretrain``, ``train``, ``weak``) in this process.  Results:
``benchmarks/quality/learning_from_less.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RESULT_JSON = HERE / "learning_from_less.json"
RESULT_MD = HERE / "learning_from_less.md"
WORK = ROOT / "runs" / "learning_from_less"
DATA = ROOT / ".." / "shared" / "data"

PRE = 60.0   # seconds of pre-training
FT = 60.0    # seconds of fine-tuning; scratch gets PRE + FT
THREADS = 1
NETS: tuple[str, ...] = ()  # --net: only these networks

CV = {"architecture": "centre_voxel",
      "params": {"receptive_field": 16, "width": 16, "head_width": 32}}
U25 = {"architecture": "unet25d",
       "params": {"context": 3, "widths": [8, 16, 32, 64], "num_res_units": 0}}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _record(results: dict[str, Any], key: str, value: dict[str, Any]) -> None:
    # several parts may run at once: merge with what the others wrote meanwhile
    on_disk = json.loads(RESULT_JSON.read_text()) if RESULT_JSON.exists() else {}
    results.update({k: v for k, v in on_disk.items() if k not in results})
    results[key] = value
    tmp = RESULT_JSON.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, RESULT_JSON)
    print(f"== {key}: {json.dumps(value, default=str)}", flush=True)


# -- data ----------------------------------------------------------------------------------
def _write(path: Path, image: np.ndarray, voxel: tuple[float, float, float],
           labels: dict[str, np.ndarray]) -> None:
    from volseg.io.omezarr import write_image, write_labels

    if (path / "zarr.json").exists():
        return
    write_image(image, path, voxel_size=voxel, pyramid=False, overwrite=True)
    for name, lab in labels.items():
        write_labels(lab, path, name, voxel_size=voxel, pyramid=False, overwrite=True)


def phantom() -> tuple[Path, np.ndarray, tuple[str, ...]]:
    from volseg.synth import fibsem

    ph = fibsem((64, 192, 192), seed=0, annotated_slices=0)
    truth = np.asarray(ph.truth)
    path = WORK / "phantom.ome.zarr"
    anns = {}
    for n, zs in (("ann1", [30, 58]), ("ann3", [12, 30, 46, 58])):  # 58: validation
        ann = np.full(truth.shape, 255, np.uint8)
        for z in zs:
            ann[z] = truth[z]
        anns[n] = ann
    _write(path, np.asarray(ph.image), ph.voxel_size, {"truth": truth, **anns})
    return path, truth, tuple(ph.class_names)


def lucchi() -> tuple[Path, np.ndarray, tuple[str, ...]]:
    import tifffile

    box = (slice(None), slice(192, 576), slice(320, 704))
    path = WORK / "lucchi.ome.zarr"
    truth = (tifffile.imread(DATA / "lucchi" / "training_groundtruth.tif")[box] > 127)
    truth = truth.astype(np.uint8)
    if not (path / "zarr.json").exists():
        image = tifffile.imread(DATA / "lucchi" / "training.tif")[box]
        ann = np.full(truth.shape, 255, np.uint8)
        for z in (30, 90, 120):  # 120: model selection only
            ann[z] = truth[z]
        _write(path, image, (5.0, 5.0, 5.0), {"truth": truth, "ann2": ann})
    return path, truth, ("background", "mitochondrion")


# -- scoring --------------------------------------------------------------------------------
def score(model: Path, image: np.ndarray, truth: np.ndarray, sections: list[int],
          classes: tuple[str, ...]) -> dict[str, Any]:
    """Held-out scores of a model file on whole sections (what volseg predict computes)."""
    from volseg.models import load_model
    from volseg.train.evaluate import confusion_matrix, predict_array, scores

    module, spec = load_model(model)
    cm = np.zeros((len(classes),) * 2, np.int64)
    for z in sections:
        if spec.kind == "centre_voxel":  # one dense pass over the section's R-deep slab
            import torch

            (bz, az), (by, ay), (bx, ax) = spec.halo
            padded = np.pad(image, ((bz, az), (by, ay), (bx, ax)), mode="reflect")
            slab = spec.normalization.apply(padded[z:z + bz + az + 1])
            rows = []
            with torch.no_grad():
                for y in range(0, image.shape[1], 64):
                    part = slab[:, y:y + 64 + by + ay]
                    rows.append(module(torch.from_numpy(part)[None, None])[0, :, 0].numpy())
            logits = np.concatenate(rows, axis=1)
        else:
            logits = predict_array(module, spec, image, sections=[z])[:, 0]
        cm += confusion_matrix(logits.argmax(0)[None], truth[z][None],
                               n_classes=len(classes), ignore_id=255)
    out = scores(cm, classes)
    return {"macro_f1": out["macro_f1"], "macro_iou": out["macro_iou"],
            "iou": {k: v["iou"] for k, v in out["per_class"].items()}}


# -- pre-training benchmark -------------------------------------------------------------------
def _pretrain(case: str, image: Path, model: dict[str, Any], method: str, out: Path
              ) -> dict[str, Any]:
    from volseg.train.pretrain import PretrainConfig, pretrain

    cv = model["architecture"] == "centre_voxel"
    cfg = PretrainConfig(
        image=str(image), method=method,
        model={**model, "patch_size": (8, 16, 16) if cv else (1, 96, 96)},
        mask={"radius": 1 if cv else 2, "fraction": 0.1}, latent=8 if cv else 4, beta=1.0,
        epochs=10_000, steps_per_epoch=10, batch_size=8 if cv else 4, validation_batches=2,
        optimizer={"lr": 2e-3, "scheduler": "none"}, max_minutes=PRE / 60,
        threads=THREADS, seed=0,
    )
    before = _load()
    summary = pretrain(cfg, image=image, output_dir=out, overwrite=True, progress=False)
    return {"initial_val_loss": summary["initial_val_loss"],
            "best_val_loss": summary["best_val_loss"], "seconds": summary["seconds"],
            "epochs": summary["best_epoch"], "load_before": before, "load_after": _load()}


def _finetune(image: Path, labels: str, classes: tuple[str, ...], model: dict[str, Any],
              val: int, out: Path, seconds: float, init: Path | None,
              label_map: dict[int, int] | None = None) -> dict[str, Any]:
    from volseg.train import TrainConfig, train

    cv = model["architecture"] == "centre_voxel"
    cfg = TrainConfig(
        image=str(image), labels=labels, classes=classes, ignore_id=255, label_map=label_map,
        # centre-voxel: 2 x 64 x 64 outputs per sample, so that validation (windows of
        # this size over the 17-section slab) does not recompute 16-voxel halos 30 times
        model={**model, "patch_size": (2, 64, 64) if cv else (1, 96, 96)},
        split={"mode": "slices", "validation_slices": [val], "gap": 3, "slab": 8 if cv else 1},
        epochs=10_000, steps_per_epoch=10, batch_size=4, early_stopping=None,
        optimizer={"lr": 2e-3, "scheduler": "none"}, max_minutes=seconds / 60,
        threads=THREADS, seed=0, init=str(init) if init else None,
        select_metric="macro_f1",
        # validate once, when the budget is spent (a dense centre-voxel validation of
        # the 17-section slab costs about a minute here): the last weights are kept
        validate_every=1_000_000,
    )
    before = _load()
    summary = train(cfg, image=image, labels=labels, output_dir=out, overwrite=True,
                    progress=False)
    return {"seconds": summary["seconds"], "best_epoch": summary["best_epoch"],
            "validation_macro_f1": summary["macro_f1"], "load_before": before,
            "load_after": _load()}


def run_pretrain(case: str, results: dict[str, Any]) -> None:
    if case == "phantom":
        image, truth, classes = phantom()
        setups = [("1 section", "ann1", 58), ("3 sections", "ann3", 58)]
        held = [2, 8, 20, 24, 38, 54]  # > 2 sections from every annotated one
    else:
        image, truth, classes = lucchi()
        setups = [("2 sections", "ann2", 120)]
        held = [132, 138, 144, 150, 156, 162]
    raw = np.asarray(__import__("volseg.io", fromlist=["open_volume"]).open_volume(image)[0])
    for mname, model in (("centre_voxel", CV), ("unet25d", U25)):
        if NETS and mname not in NETS:
            continue
        pre_files: dict[str, Path] = {}
        for method in ("masked_centre", "vae"):
            key = f"{case}/{mname}/pretrain/{method}"
            out = WORK / case / mname / method
            if key not in results:
                _record(results, key, _pretrain(case, image, model, method, out))
            pre_files[method] = out / "pretrained.safetensors"
        for sname, ann, val in setups:
            labels = str(image / "labels" / ann)
            # scratch_ft: scratch with the fine-tuning time only (pre-training counted as
            # paid once, e.g. for many fine-tunes)
            for start in ("scratch", "masked_centre", "vae", "scratch_ft"):
                key = f"{case}/{mname}/{sname}/{start}"
                if key in results:
                    continue
                out = WORK / case / mname / ann / start
                init = None if start.startswith("scratch") else pre_files[start]
                budget = PRE + FT if start == "scratch" else FT
                rec = _finetune(image, labels, classes, model, val, out, budget, init)
                rec["budget_s"] = {"pretrain": 0 if init is None else PRE,
                                   "train": budget}
                rec["held_out"] = score(out / "model.safetensors", raw, truth, held, classes)
                rec["held_out_sections"] = held
                _record(results, key, rec)


# -- weak labels ----------------------------------------------------------------------------
def run_weak(results: dict[str, Any]) -> None:
    from volseg.io import open_volume
    from volseg.synth import em2d
    from volseg.train import TrainConfig, train
    from volseg.train.weak import WeakConfig, tags_from_labels, weak, write_tags

    cases = []
    ph = em2d((16, 512, 512), seed=0, blob_probability=0.08)  # about half the tiles positive
    em_truth = np.asarray(ph.truth)
    em_path = WORK / "em2d.ome.zarr"
    _write(em_path, np.asarray(ph.image), ph.voxel_size, {"truth": em_truth})
    cases.append(("em2d", em_path, em_truth, tuple(ph.class_names), list(range(12)),
                  (12, 13), [14, 15], 1))
    lu_path, lu_truth, lu_classes = lucchi()
    cases.append(("lucchi", lu_path, lu_truth, lu_classes, list(range(0, 120, 2)),
                  (120, 130), [132, 138, 144, 150, 156, 162], 3))
    net = {"architecture": "unet25d", "params": {"context": 1, "widths": [8, 16, 32, 64],
                                                  "num_res_units": 0},
           "patch_size": (1, 128, 128)}
    for name, path, truth, classes, tag_z, (v0, v1), held, _ in cases:
        key = f"weak/{name}"
        if key in results:
            continue
        raw = np.asarray(open_volume(path)[0])
        tiles = tags_from_labels(truth, tile=128, sections=tag_z + list(range(v0, v1)),
                                 n_classes=len(classes), min_voxels=20)
        tags = write_tags(WORK / f"{name}_tags.csv", tiles, classes)
        out = WORK / "weak" / name
        cfg = WeakConfig(
            image=str(path), tags=str(tags), classes=classes, model=net, epochs=10_000,
            steps_per_epoch=10, batch_size=8, threads=THREADS, max_minutes=2 * PRE / 60,
            optimizer={"lr": 3e-3, "scheduler": "none"},
            segment={"model": net, "split": {"validation": [[v0, v1]], "gap": 0},
                     "epochs": 10_000, "steps_per_epoch": 10, "batch_size": 4,
                     "early_stopping": None, "max_minutes": FT / 60, "threads": THREADS,
                     "optimizer": {"lr": 2e-3, "scheduler": "none"}},
        )
        before = _load()
        summary = weak(cfg, image=path, tags=tags, truth=path / "labels" / "truth",
                       output_dir=out, overwrite=True, progress=False)
        rec: dict[str, Any] = {
            "tiles": len(tiles), "positive_tiles": sum(1 for t in tiles if t.classes),
            "tag_sections": f"{tag_z[0]}..{tag_z[-1]} (+ validation {v0}..{v1 - 1})",
            "pseudo_iou": summary["pseudo_iou"], "seconds_cam": summary["seconds_cam"],
            "load_before": before, "load_after": _load(),
        }
        positive = np.zeros(truth.shape, bool)
        for t in tiles:
            if t.classes:
                positive[t.start[0], t.start[1]:t.stop[1], t.start[2]:t.stop[2]] = True
        fg = truth == 1
        tagged = np.zeros(truth.shape, bool)
        for t in tiles:
            tagged[t.start[0], t.start[1]:t.stop[1], t.start[2]:t.stop[2]] = True
        rec["tags_only_iou"] = float((positive & fg).sum() / ((positive | fg) & tagged).sum())
        rec["weak_network"] = score(out / "model.safetensors", raw, truth, held, classes)
        # fully supervised: the same network on the full truth of the tagged sections
        ann = np.full(truth.shape, 255, np.uint8)
        for z in sorted({t.start[0] for t in tiles}):
            ann[z] = truth[z]
        full_path = WORK / f"{name}_full.ome.zarr"
        _write(full_path, raw, (5.0, 5.0, 5.0) if name == "lucchi" else ph.voxel_size,
               {"annotation": ann})
        sup = TrainConfig(
            image=str(full_path), labels=str(full_path / "labels" / "annotation"),
            classes=classes, model=net, split={"validation": [[v0, v1]], "gap": 0},
            epochs=10_000, steps_per_epoch=10, batch_size=4, early_stopping=None,
            max_minutes=FT / 60, threads=THREADS, optimizer={"lr": 2e-3, "scheduler": "none"})
        train(sup, image=full_path, labels=full_path / "labels" / "annotation",
              output_dir=WORK / "weak" / f"{name}_full", overwrite=True, progress=False)
        rec["supervised_network"] = score(WORK / "weak" / f"{name}_full" / "model.safetensors",
                                          raw, truth, held, classes)
        rec["held_out_sections"] = held
        rec["budget_s"] = {"cam": 2 * PRE, "segment": FT, "supervised": FT}
        rec["load_end"] = _load()
        _record(results, key, rec)


# -- tables ---------------------------------------------------------------------------------
def tables(results: dict[str, Any]) -> str:
    lines = ["# Learning from less: pre-training vs scratch, weak labels from tags", "",
             "Generated by `benchmarks/quality/learning_from_less.py` from "
             "`learning_from_less.json` (every figure, budget and load average is there).",
             f"Machine: {results.get('_machine', {})}.",
             "Cells: held-out score (optimiser steps of the supervised training; seconds "
             "of the training call, set-up and its one validation included, pre-training "
             "not; 1-minute load average when it started). Budgets: `budget_s` of each "
             "record. The load of the shared 2-core machine changed from 20 to 5 during "
             "the runs, so equal wall-clock budgets bought different numbers of steps: "
             "compare the steps too.", ""]
    for case, metric in (("phantom", "macro_f1"), ("lucchi", "iou")):
        rows = {k: v for k, v in results.items() if k.startswith(case + "/")}
        if not rows:
            continue
        lines += [f"## {case}: held-out "
                  + ("macro F1 (7 classes)" if case == "phantom" else "mitochondrion IoU"), "",
                  "| network | labels | scratch (pre + ft s) | masked_centre + fine-tune "
                  "(pre + ft s) | vae + fine-tune (pre + ft s) | scratch, ft s only |",
                  "|---|---|---|---|---|---|"]
        combos = sorted({tuple(k.split("/")[1:3]) for k in rows if "/pretrain/" not in k})
        for net, setup in combos:
            cells = []
            for start in ("scratch", "masked_centre", "vae", "scratch_ft"):
                r = rows.get(f"{case}/{net}/{setup}/{start}")
                if r is None:
                    cells.append("—")
                    continue
                h = r["held_out"]
                v = h["macro_f1"] if metric == "macro_f1" else h["iou"]["mitochondrion"]
                steps = r["best_epoch"] * 10  # validated once, at the end: the last epoch
                cells.append(f"{v:.3f} ({steps} steps, {r['seconds']:.0f} s, "
                             f"load {r['load_before'][0]:.0f})")
            lines.append(f"| {net} | {setup} | " + " | ".join(cells) + " |")
        lines += ["", "Pre-training (validation loss on fixed batches, before → best):", ""]
        for k, r in rows.items():
            if "/pretrain/" in k:
                lines.append(f"- {k}: {r['initial_val_loss']:.4f} → {r['best_val_loss']:.4f} "
                             f"in {r['seconds']:.0f} s (load {r['load_before'][0]:.0f})")
        lines.append("")
    weak_rows = {k: v for k, v in results.items() if k.startswith("weak/")}
    if weak_rows:
        lines += ["## Weak labels from tags (derived from the truth per 128² tile)", "",
                  "| data | tiles (positive) | IoU tags only | IoU CAM pseudo-labels | "
                  "held-out IoU, trained on pseudo-labels | held-out IoU, fully supervised |",
                  "|---|---|---|---|---|---|"]
        for k, r in weak_rows.items():
            fg = next(c for c in r["pseudo_iou"]
                      if c not in ("background", "labelled_fraction_of_tiles"))
            lines.append(
                f"| {k.split('/')[1]} | {r['tiles']} ({r['positive_tiles']}) | "
                f"{r['tags_only_iou']:.3f} | {r['pseudo_iou'][fg]:.3f} | "
                f"{r['weak_network']['iou'][fg]:.3f} | "
                f"{r['supervised_network']['iou'][fg]:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global PRE, FT, RESULT_JSON, RESULT_MD, WORK, NETS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["pretrain-phantom", "pretrain-lucchi", "weak",
                                         "tables"])
    parser.add_argument("--pre", type=float, default=PRE, help="pre-training seconds")
    parser.add_argument("--ft", type=float, default=FT, help="fine-tuning seconds")
    parser.add_argument("--net", action="append", default=[],
                        choices=["centre_voxel", "unet25d"], help="only this network")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: benchmarks/quality/learning_from_less.json)")
    args = parser.parse_args(argv)
    PRE, FT, NETS = args.pre, args.ft, tuple(args.net)
    if args.out is not None:
        RESULT_JSON, RESULT_MD = args.out, args.out.with_suffix(".md")
        WORK = args.out.parent / "work"
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(THREADS)
    WORK.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = (json.loads(RESULT_JSON.read_text())
                               if RESULT_JSON.exists() else {})
    results["_machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "torch": torch.__version__, "threads_per_run": THREADS}
    if args.part == "pretrain-phantom":
        run_pretrain("phantom", results)
    elif args.part == "pretrain-lucchi":
        run_pretrain("lucchi", results)
    elif args.part == "weak":
        run_weak(results)
    RESULT_MD.write_text(tables(results))
    print(RESULT_MD.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
