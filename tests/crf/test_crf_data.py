"""The dense CRF on real FIB-SEM (Lucchi, CA1 hippocampus, 5 nm): it helps, and blocks agree.

Unaries are the ground-truth mitochondria mask corrupted by strong voxel noise (a
stand-in for a weak network); the bilateral term then follows the real membranes.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from volseg.crf import CRFConfig, crf_labels, dense_crf
from volseg.io import open_volume

VOXEL = (5.0, 5.0, 5.0)
CROP = (slice(60, 92), slice(256, 384), slice(384, 512))  # 32 x 128 x 128, mitochondria inside


def iou(a, b):
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.data
def test_crf_on_lucchi(shared_data):
    image = open_volume(shared_data / "lucchi" / "training.tif")[0][CROP].compute()
    mito = open_volume(shared_data / "lucchi" / "training_groundtruth.tif")[0][CROP].compute() > 0
    assert mito.any()
    rng = np.random.default_rng(0)
    logit = np.where(mito, 1.0, -1.0) + rng.standard_normal(mito.shape) * 1.5
    p = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)[None]  # one channel: foreground
    before = iou(p[0] > 0.5, mito)
    gauss = CRFConfig(bilateral_weight=0)
    both = CRFConfig()
    out_gauss = dense_crf(p, image, gauss, voxel_size=VOXEL)
    out_both = dense_crf(p, image, both, voxel_size=VOXEL)
    iou_gauss, iou_both = iou(out_gauss == 1, mito), iou(out_both == 1, mito)
    print(f"Lucchi mitochondria IoU: noisy {before:.3f}, Gaussian CRF {iou_gauss:.3f}, "
          f"+ bilateral {iou_both:.3f}")
    assert iou_gauss > before + 0.3
    assert iou_both > iou_gauss  # the intensity term snaps to the real membranes
    lazy = crf_labels(da.from_array(p), da.from_array(image), voxel_size=VOXEL, config=both,
                      block_size=(32, 64, 64))
    assert lazy.numblocks == (1, 2, 2)  # z is thinner than two halos (27 voxels)
    agreement = np.mean(lazy.compute() == out_both)
    print(f"blockwise vs whole (bilateral, real EM): {agreement:.6f}")
    assert agreement >= 0.999
