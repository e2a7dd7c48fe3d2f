"""One evaluation pass on a real distributed cluster (worker processes) from Zarr on disk."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster
from skimage.metrics import adapted_rand_error, variation_of_information
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from volseg.metrics import evaluate

TOL = 1e-9


def _write(path: Path, data: np.ndarray, chunks: tuple[int, ...]) -> da.Array:
    arr = zarr.create_array(str(path), shape=data.shape, dtype=data.dtype, chunks=chunks)
    arr[...] = data
    return da.from_zarr(str(path))


@pytest.mark.timeout(120)
def test_local_cluster_with_processes(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    shape = (9, 34, 29)
    # instances: blocks of ids; prediction: shifted by one voxel and partly merged
    zz, yy, xx = np.indices(shape)
    truth_inst = (1 + zz // 3 * 100 + yy // 7 * 10 + xx // 6).astype(np.uint32)
    truth_inst[:, :3] = 0
    pred_inst = np.roll(truth_inst, 1, axis=2) // 2
    truth_sem = (truth_inst % 4).astype(np.uint8)
    truth_sem[rng.random(shape) < 0.5] = 255
    pred_sem = (pred_inst % 4).astype(np.uint8)
    prob = rng.integers(0, 256, (4, *shape), dtype=np.uint8)
    chunks = (4, 10, 11)  # does not divide the shape
    arrays = {
        name: _write(tmp_path / f"{name}.zarr", data, chunks if data.ndim == 3 else (4, *chunks))
        for name, data in {
            "ti": truth_inst,
            "pi": pred_inst,
            "ts": truth_sem,
            "ps": pred_sem,
            "prob": prob,
        }.items()
    }
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        assert len(client.scheduler_info()["workers"]) == 2
        result = evaluate(
            semantic={
                "prediction": arrays["ps"],
                "truth": arrays["ts"],
                "n_classes": 4,
                "ignore_label": 255,
                "probabilities": arrays["prob"],
            },
            instances={"prediction": arrays["pi"], "truth": arrays["ti"]},
            class_names=["a", "b", "c", "d"],
            client=client,
        )
    keep = truth_sem != 255
    np.testing.assert_array_equal(
        result["semantic"]["confusion_matrix"],
        confusion_matrix(truth_sem[keep], pred_sem[keep], labels=[0, 1, 2, 3]),
    )
    assert result["semantic"]["cohen_kappa"] == pytest.approx(
        cohen_kappa_score(truth_sem[keep], pred_sem[keep]), abs=TOL
    )
    split, merge = variation_of_information(truth_inst, pred_inst, ignore_labels=(0,))
    are, _, _ = adapted_rand_error(truth_inst, pred_inst)
    inst = result["instances"]
    assert (inst["voi_split"], inst["voi_merge"]) == pytest.approx((split, merge), abs=TOL)
    assert inst["adapted_rand_error"] == pytest.approx(are, abs=TOL)
    assert merge > 0.1 and split > 0.01
