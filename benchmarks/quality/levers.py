"""Prediction-time levers of the quality benchmarks, chosen on a tuning slab only.

:func:`measure_levers` predicts the tuning and the scored sections of a case once
without and once with flip TTA, then walks a fixed list of levers (TTA, a decision
threshold, a 3-D median filter, small-object removal, hole filling, the dense CRF).
Each lever's setting is picked on the *tuning* sections (never on the scored ones); the
lever is kept when it improves the tuning figure, and every row reports the scored
figure too, so the table says what each lever gave.  The post-processing runs through
:func:`volseg.postprocess.postprocess_array`, the whole-array twin of the ``postprocess``
stage, and the CRF through :func:`volseg.crf.kernel.dense_crf` tile by tile with a
halo, as the ``crf`` stage does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Region:
    """Probabilities and truth of the sections ``start .. stop`` of a case's volume."""

    start: int
    probabilities: np.ndarray  # (C, Z, Y, X) float32, softmax
    probabilities_tta: np.ndarray
    truth: np.ndarray  # (Z, Y, X) class ids or ignore_id
    image: np.ndarray  # (Z, Y, X) raw intensities (the CRF's bilateral term)

    def rows(self, sections: Sequence[int]) -> list[int]:
        """Indices into the region's z axis of global sections."""
        return [z - self.start for z in sections]


@dataclass(frozen=True)
class Pipeline:
    """One prediction-time configuration (what ``volseg predict`` + stages would run)."""

    tta: bool = False
    threshold: float | None = None
    median_size: int | tuple[int, int, int] = 0
    min_size: int = 0
    fill_holes: bool = False
    crf: bool = False

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _crf(prob: np.ndarray, image: np.ndarray, voxel_size: Sequence[float],
         tile: int = 256, halo: int = 16) -> np.ndarray:
    """CRF marginals of a region, tile by tile over y-x with a halo (the crf stage's way)."""
    from volseg.crf.kernel import dense_crf
    from volseg.crf.options import CRFConfig

    config = CRFConfig()
    out = np.empty_like(prob)
    _, _, ny, nx = prob.shape
    q = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)  # the stored uint8 probabilities
    for y0 in range(0, ny, tile):
        for x0 in range(0, nx, tile):
            a, b = max(0, y0 - halo), min(ny, y0 + tile + halo)
            c, d = max(0, x0 - halo), min(nx, x0 + tile + halo)
            marg = dense_crf(q[:, :, a:b, c:d], image[:, a:b, c:d], config,
                             voxel_size=voxel_size, origin=(0, a, c),
                             return_probabilities=True)
            out[:, :, y0:min(ny, y0 + tile), x0:min(nx, x0 + tile)] = marg[
                :, :, y0 - a:y0 - a + min(tile, ny - y0), x0 - c:x0 - c + min(tile, nx - x0)]
    return out


def labels_of(region: Region, pipe: Pipeline, voxel_size: Sequence[float],
              crf_cache: dict[bool, np.ndarray]) -> np.ndarray:
    """Labels of the whole region under one pipeline."""
    from volseg.postprocess import PostprocessOptions, postprocess_array

    prob = region.probabilities_tta if pipe.tta else region.probabilities
    if pipe.crf:
        if pipe.tta not in crf_cache:
            crf_cache[pipe.tta] = _crf(prob, region.image, voxel_size)
        prob = crf_cache[pipe.tta]
    options = PostprocessOptions(threshold=pipe.threshold, median_size=pipe.median_size,
                                 min_size=pipe.min_size, fill_holes=pipe.fill_holes)
    return np.asarray(postprocess_array(prob, options))


@dataclass
class Lever:
    """A lever: its name and the settings tried (each a change of the pipeline)."""

    name: str
    options: list[dict[str, Any]]


def default_levers(binary: bool, anisotropic: bool) -> list[Lever]:
    """The levers of the issue, in the order they are tried."""
    levers = [Lever("flip TTA", [{"tta": True}])]
    if binary:
        levers.append(Lever("threshold", [{"threshold": t} for t in
                                          (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)]))
    # ssTEM sections are ~10x thicker than a pixel: in-plane windows, and one 3-voxel cube
    sizes: tuple[Any, ...] = ((1, 3, 3), (1, 5, 5), (3, 3, 3)) if anisotropic else (3, 5, 7)
    levers.append(Lever("median filter", [{"median_size": s} for s in sizes]))
    if binary:
        levers += [
            # up to 100,000 voxels (0.0125 um^3 at 5 nm): on Lucchi the first grid's
            # largest value (20,000) was also the best on the tuning sections
            Lever("small-object removal", [{"min_size": n} for n in
                                           (100, 1000, 5000, 20000, 50000, 100000)]),
            Lever("hole filling", [{"fill_holes": True}]),
        ]
    levers.append(Lever("dense CRF", [{"crf": True}]))
    return levers


def measure_levers(
    region: Region,
    *,
    tune_sections: Sequence[int],
    score_sections: Sequence[int],
    score: Callable[[np.ndarray, np.ndarray], float],
    details: Callable[[np.ndarray, np.ndarray], dict[str, Any]],
    levers: Sequence[Lever],
    voxel_size: Sequence[float],
) -> dict[str, Any]:
    """Walk the levers greedily; every choice is made on ``tune_sections`` only.

    Parameters
    ----------
    region
        The predicted region holding both section sets.
    score
        ``score(labels, truth) -> float``, higher is better (the case's target metric).
    details
        ``details(labels, truth) -> dict``: the full scores of the final pipeline.

    Returns
    -------
    dict
        ``rows`` (one per lever: best setting on the tuning sections, its tuning and
        scored figures, whether it was kept), ``final`` (the kept pipeline and its
        scored figures) and ``baseline``.
    """
    tune, held = region.rows(tune_sections), region.rows(score_sections)
    crf_cache: dict[bool, np.ndarray] = {}

    def evaluate(pipe: Pipeline) -> tuple[float, float, np.ndarray]:
        labels = labels_of(region, pipe, voxel_size, crf_cache)
        return (score(labels[tune], region.truth[tune]),
                score(labels[held], region.truth[held]), labels)

    current = Pipeline()
    t_tune, t_held, _ = evaluate(current)
    rows: list[dict[str, Any]] = [{"lever": "baseline (argmax, no TTA)", "setting": None,
                                   "tune": t_tune, "heldout": t_held, "kept": True}]
    for lever in levers:
        t0 = time.perf_counter()
        tried = []
        for change in lever.options:
            pipe = replace(current, **change)
            tu, he, _ = evaluate(pipe)
            tried.append({"setting": change, "tune": tu, "heldout": he})
        best = max(tried, key=lambda r: r["tune"])
        kept = best["tune"] > t_tune
        rows.append({"lever": lever.name, "setting": best["setting"], "tune": best["tune"],
                     "heldout": best["heldout"], "kept": kept, "tried": tried,
                     "seconds": round(time.perf_counter() - t0, 1),
                     "delta_heldout": best["heldout"] - t_held})
        if kept:
            current = replace(current, **best["setting"])
            t_tune, t_held = best["tune"], best["heldout"]
        print(f"  lever {lever.name}: best {best['setting']} tune {best['tune']:.4f} "
              f"held-out {best['heldout']:.4f} -> {'kept' if kept else 'dropped'}", flush=True)
    labels = labels_of(region, current, voxel_size, crf_cache)
    return {
        "rows": rows,
        "final": {"pipeline": current.describe(), "tune": t_tune, "heldout": t_held,
                  "heldout_scores": details(labels[held], region.truth[held])},
        "tune_sections": [int(tune_sections[0]), int(tune_sections[-1])],
        "score_sections": [int(score_sections[0]), int(score_sections[-1])],
    }
