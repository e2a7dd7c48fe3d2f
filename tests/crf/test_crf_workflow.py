"""``crf`` and ``instances`` as workflow stages: synth phantom → (noisy) probabilities →
CRF → objects, through the YAML schema and the resumable runner."""

from __future__ import annotations

import numpy as np

from volseg.instances import read_table
from volseg.io import open_volume
from volseg.io.omezarr import write_image
from volseg.workflow.runner import run_workflow
from volseg.workflow.schema import load_workflow

WORKFLOW = """\
name: crf-instances
output_dir: {out}
cluster: {{type: threads}}
synth:
  kind: fibsem
  shape: [24, 96, 96]
  seed: 3
  annotated_slices: 0
crf:
  iterations: 5
  block_size: [24, 48, 48]
  processes: 1
instances:
  labels: crf.ome.zarr
  classes: [2]
  connectivity: 26
  min_size: 20
  block_size: [12, 48, 48]
"""


def test_workflow_synth_crf_instances(tmp_path):
    out = tmp_path / "run"
    yaml_path = tmp_path / "wf.yaml"
    yaml_path.write_text(WORKFLOW.format(out=out))
    workflow = load_workflow(yaml_path)
    run_workflow(workflow, base_dir=tmp_path, only=["synth"])
    truth, meta = open_volume(out / "image.ome.zarr" / "labels" / "truth")
    truth = truth.compute()
    n_classes = int(truth.max()) + 1
    # stand in for the predict stage: noisy probabilities around the ground truth
    rng = np.random.default_rng(0)
    logits = np.eye(n_classes, dtype=np.float32)[truth].transpose(3, 0, 1, 2) * 1.5
    logits += rng.standard_normal(logits.shape).astype(np.float32)
    p = np.exp(logits - logits.max(0))
    p /= p.sum(0)
    write_image(np.round(p * 255).astype(np.uint8), out / "prediction.ome.zarr",
                voxel_size=meta.voxel_size, axes=("c", "z", "y", "x"),
                chunks=(n_classes, 24, 48, 48))
    outcomes = run_workflow(workflow, base_dir=tmp_path)
    status = {o.name: o.status for o in outcomes}
    assert status["crf"] == "ran" and status["instances"] == "ran"
    crf, _ = open_volume(out / "crf.ome.zarr")
    crf = crf.compute()
    before = np.mean(np.argmax(p, 0) == truth)
    after = np.mean(crf == truth)
    print(f"synthetic FIB-SEM: accuracy {before:.4f} -> {after:.4f} after the CRF")
    assert after > before
    inst, _ = open_volume(out / "instances.ome.zarr")
    inst = inst.compute()
    table = read_table(out / "instances.csv")
    assert inst.max() == len(table["id"]) > 0
    assert (table["voxel_count"] >= 20).all() and set(table["class"].tolist()) == {2}
    np.testing.assert_array_equal(table["voxel_count"], np.bincount(inst.ravel())[1:])
    # a rerun does no work
    again = run_workflow(workflow, base_dir=tmp_path)
    assert {o.name: o.status for o in again}["crf"] == "skipped"
