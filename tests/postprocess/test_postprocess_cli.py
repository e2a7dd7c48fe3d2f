"""``volseg postprocess`` and the ``postprocess`` stage on real OME-Zarr files."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from test_postprocess import _phantom

from volseg.cli import main
from volseg.errors import OutputExistsError
from volseg.io import open_volume
from volseg.io.omezarr import group_attrs, image_of, image_state, write_image
from volseg.io.store import marker_dir
from volseg.io.validation import validate
from volseg.postprocess import PostprocessOptions, postprocess_array
from volseg.postprocess.pipeline import run_postprocess
from volseg.stages import postprocess as stage
from volseg.workflow.runner import run_workflow
from volseg.workflow.schema import load_workflow
from volseg.workflow.stage import RunContext

VOXEL = (10.0, 5.0, 5.0)
BLOCK = (5, 16, 13)
FLAGS = ["--median-size", "3", "--min-size", "20", "--fill-holes", "--block", *map(str, BLOCK)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("postprocess_inputs")
    truth, p = _phantom()
    q = np.round(p * 255).astype(np.uint8)
    write_image(q, root / "prediction.ome.zarr", voxel_size=VOXEL, axes=("c", "z", "y", "x"),
                chunks=(2, 8, 16, 16),
                attrs={"volseg": {"class_names": ["background", "mito"], "ignore_id": 255}})
    write_image(truth, root / "image.ome.zarr", voxel_size=VOXEL, chunks=(8, 16, 16))
    return root, q


def _status(argv: list[str]) -> int:
    """The exit status of ``volseg ARGV`` (argparse's own errors exit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_cli_writes_the_label_image(inputs, tmp_path, capsys):
    root, q = inputs
    out = tmp_path / "pp.ome.zarr"
    assert main(["postprocess", str(root / "prediction.ome.zarr"), "-o", str(out),
                 "--image", str(root / "image.ome.zarr"), *FLAGS]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    labels, meta = open_volume(out)
    assert meta.kind == "labels" and meta.voxel_size == VOXEL
    got = labels.compute()
    options = PostprocessOptions(median_size=3, min_size=20, fill_holes=True, block_size=BLOCK)
    np.testing.assert_array_equal(got, postprocess_array(q, options))
    assert (got != np.argmax(q, 0)).sum() > 100
    assert validate(out).model == "ImageLabel"
    assert image_of(out) == (root / "image.ome.zarr").resolve()
    assert image_state(out) == "complete"
    record = group_attrs(out)["volseg"]
    assert record["class_names"] == ["background", "mito"] and record["ignore_id"] == 255
    assert record["postprocess"]["options"] == options.to_dict()
    assert record["postprocess"]["halo"] == [1, 1, 1]
    assert record["config"]["median_size"] == 3
    assert "volseg postprocess" in record["command"]
    label = group_attrs(out)["image-label"]
    assert [p["class"] for p in label["properties"] if not p.get("ignore")] == \
        ["background", "mito"]
    # a finished output: refused without --overwrite (exit 2, one line), replaced with it
    assert main(["postprocess", str(root / "prediction.ome.zarr"), "-o", str(out)]) == 2
    assert "--overwrite" in _one_error_line(capsys)
    assert main(["postprocess", str(root / "prediction.ome.zarr"), "-o", str(out),
                 "--overwrite", "--median-size", "1", "5", "5", "--no-pyramid"]) == 0
    np.testing.assert_array_equal(
        open_volume(out)[0].compute(),
        postprocess_array(q, PostprocessOptions(median_size=(1, 5, 5))))
    assert group_attrs(out)["volseg"]["postprocess"]["halo"] == [0, 2, 2]


def test_cli_refuses_an_output_inside_the_input(inputs, capsys):
    root, _ = inputs
    inside = root / "prediction.ome.zarr" / "labels" / "pp"
    assert main(["postprocess", str(root / "prediction.ome.zarr"), "-o", str(inside)]) == 2
    assert "prediction.ome.zarr" in _one_error_line(capsys)
    assert not inside.exists()
    inside = root / "image.ome.zarr" / "labels" / "pp"
    assert main(["postprocess", str(root / "prediction.ome.zarr"), "-o", str(inside),
                 "--image", str(root / "image.ome.zarr")]) == 2
    assert "image.ome.zarr" in _one_error_line(capsys)
    assert not inside.exists()


@pytest.mark.parametrize(("argv", "flag"), [
    (["--median-size", "4"], "--median-size"),
    (["--median-size", "3", "3"], "--median-size"),
    (["--threshold", "2"], "--threshold"),
    (["--min-size", "-3"], "--min-size"),
    (["--connectivity", "4"], "--connectivity"),
])
def test_cli_bad_options_are_one_line(inputs, tmp_path, capsys, argv, flag):
    root, _ = inputs
    out = tmp_path / "bad.ome.zarr"
    assert _status(["postprocess", str(root / "prediction.ome.zarr"), "-o", str(out),
                    *argv]) == 2
    assert flag in _one_error_line(capsys)
    assert not out.exists()


def test_cli_labels_instead_of_probabilities_are_one_line(inputs, tmp_path, capsys):
    root, _ = inputs
    out = tmp_path / "o.ome.zarr"
    assert main(["postprocess", str(root / "image.ome.zarr"), "-o", str(out)]) == 2
    assert "c, z, y, x" in _one_error_line(capsys)
    assert not out.exists()


def test_cli_three_classes_refuse_holes(tmp_path, capsys):
    q = np.full((3, 4, 8, 8), 85, dtype=np.uint8)
    write_image(q, tmp_path / "p3.ome.zarr", voxel_size=VOXEL, axes=("c", "z", "y", "x"))
    out = tmp_path / "o.ome.zarr"
    assert main(["postprocess", str(tmp_path / "p3.ome.zarr"), "-o", str(out),
                 "--fill-holes"]) == 2
    assert "two-class" in _one_error_line(capsys)
    assert not out.exists()


def test_resume_recomputes_only_missing_blocks(inputs, tmp_path):
    root, q = inputs
    out = tmp_path / "r.ome.zarr"
    options = PostprocessOptions(median_size=3, min_size=20, fill_holes=True,
                                 block_size=(9, 23, 38))
    first = run_postprocess(root / "prediction.ome.zarr", out, options)
    assert first.report.computed_blocks == first.report.total_blocks == 4
    arr = zarr.open_array(str(out / "0"), mode="r+")
    done = arr[...].astype(np.int64)
    np.testing.assert_array_equal(done, postprocess_array(q, options))
    arr[...] = 7  # the data is gone and one block's marker is missing
    sorted(marker_dir(arr).iterdir())[0].unlink()
    assert image_state(out) == "partial"
    second = run_postprocess(root / "prediction.ome.zarr", out, options)
    assert second.state_before == "partial"
    assert second.report.computed_blocks == 1 and second.report.skipped_blocks == 3
    again = zarr.open_array(str(out / "0"), mode="r")[...].astype(np.int64)
    recomputed = again != 7
    assert 0 < recomputed.sum() < again.size
    np.testing.assert_array_equal(again[recomputed], done[recomputed])
    # another configuration does not resume into it
    with pytest.raises(OutputExistsError, match="overwrite"):
        run_postprocess(root / "prediction.ome.zarr", out, PostprocessOptions(min_size=3))


def test_stage_runs_then_skips(inputs, tmp_path):
    root, q = inputs
    ctx = RunContext(workdir=tmp_path, base_dir=root, provenance={"workflow": "t"})
    config = stage.Config(median_size=[1, 3, 3], threshold=0.4, block_size=BLOCK)
    assert config.probabilities == "prediction.ome.zarr"
    assert config.output == "postprocess.ome.zarr"
    summary = stage.run(config, ctx)
    assert summary["blocks"] == summary["computed_blocks"] == 4 * 3 * 3
    got = open_volume(tmp_path / "postprocess.ome.zarr")[0].compute()
    np.testing.assert_array_equal(
        got, postprocess_array(q, PostprocessOptions(median_size=(1, 3, 3), threshold=0.4)))
    attrs = group_attrs(tmp_path / "postprocess.ome.zarr")["volseg"]
    assert attrs["stage"] == "postprocess" and attrs["workflow"] == "t"
    assert stage.run(config, ctx)["status"] == "complete (skipped)"
    with pytest.raises(ValueError):
        stage.Config(median_size=2)
    with pytest.raises(ValueError):
        stage.Config(unknown=1)


WORKFLOW = """\
name: postprocess
output_dir: {out}
cluster: {{type: threads}}
synth:
  kind: fibsem
  shape: [16, 64, 64]
  seed: 3
  annotated_slices: 0
postprocess:
  median_size: 3
  min_size: 10
  block_size: [8, 32, 32]
evaluate:
  prediction: postprocess.ome.zarr
  truth: image.ome.zarr/labels/truth
"""


def test_workflow_synth_postprocess_evaluate(tmp_path):
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
    q = np.round(p * 255).astype(np.uint8)
    write_image(q, out / "prediction.ome.zarr", voxel_size=meta.voxel_size,
                axes=("c", "z", "y", "x"), chunks=(n_classes, 8, 32, 32))
    outcomes = run_workflow(workflow, base_dir=tmp_path)
    assert {o.name: o.status for o in outcomes} == {"synth": "skipped", "postprocess": "ran",
                                                   "evaluate": "ran"}
    got = open_volume(out / "postprocess.ome.zarr")[0].compute()
    np.testing.assert_array_equal(
        got, postprocess_array(q, PostprocessOptions(median_size=3, min_size=10)))
    assert np.mean(got == truth) > np.mean(np.argmax(q, 0) == truth)
    assert (out / "report" / "metrics.json").is_file()
    again = run_workflow(workflow, base_dir=tmp_path)
    assert {o.name: o.status for o in again}["postprocess"] == "skipped"
