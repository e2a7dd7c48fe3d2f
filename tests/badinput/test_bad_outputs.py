"""Corpus: outputs that would destroy inputs or foreign data, and resumes that mix runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from corpus import FAST, Inputs, Refuse, interrupted, predict

from volseg.io import guard
from volseg.io.omezarr import write_image


def _read(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(path / "0"), mode="r")[...])


# ----------------------------------------------------------------- output over input
@pytest.mark.parametrize("probabilities", ["uint8", "none"])
def test_predict_output_equal_to_its_input(inputs: Inputs, refused: Refuse,
                                           probabilities: str) -> None:
    refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output",
             inputs.image, "--probabilities", probabilities, "--overwrite", *FAST],
            "overlaps the input")


def test_predict_output_inside_or_around_its_input(inputs: Inputs, refused: Refuse,
                                                   tmp_path: Path) -> None:
    base = ["predict", "--model", inputs.model, *FAST]
    refused([*base, "--input", inputs.image, "--output", inputs.image / "pred.ome.zarr"],
            "(it lies inside it)")
    nested = tmp_path / "outer"
    nested.mkdir()
    image = nested / "image.ome.zarr"
    write_image(np.zeros((16, 32, 32), np.uint8), image, voxel_size=None, pyramid=False)
    refused([*base, "--input", image, "--output", nested, "--overwrite"], "(it contains it)")


def test_predict_output_through_a_symlink_to_its_input(inputs: Inputs, refused: Refuse,
                                                       tmp_path: Path) -> None:
    link = tmp_path / "alias.ome.zarr"
    link.symlink_to(inputs.image, target_is_directory=True)
    refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output", link,
             "--overwrite", *FAST], "overlaps the input")


def test_predict_output_equal_to_the_model(inputs: Inputs, refused: Refuse) -> None:
    refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output",
             inputs.model, "--overwrite", *FAST], "overlaps the input")


def test_crf_output_onto_its_image(inputs: Inputs, refused: Refuse, tmp_path: Path) -> None:
    probs = tmp_path / "pred.ome.zarr"
    assert predict(inputs, probs) == 0
    refused(["crf", "--probabilities", probs, "--image", inputs.image, "--output",
             inputs.image, "--overwrite"], "overlaps the input")
    refused(["crf", "--probabilities", probs, "--image", inputs.image, "--output",
             probs / "labels" / "crf", "--overwrite"], "(it lies inside it)")


def test_instances_output_onto_its_input(inputs: Inputs, refused: Refuse) -> None:
    refused(["instances", "--labels", inputs.labels, "--output", inputs.labels,
             "--classes", "1", "--overwrite"], "overlaps the input")


def test_convert_output_into_its_source(inputs: Inputs, refused: Refuse) -> None:
    refused(["convert", inputs.image, inputs.image / "copy.ome.zarr"], "(it lies inside it)")


# ----------------------------------------------------------------- foreign outputs
def test_overwrite_refuses_a_zarr_group_volseg_did_not_write(inputs: Inputs, refused: Refuse,
                                                              tmp_path: Path) -> None:
    foreign = tmp_path / "theirs.ome.zarr"
    group = zarr.open_group(str(foreign), mode="w")
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [], "datasets": []}]
    group.create_array("0", shape=(4, 4), dtype="uint8")[...] = 7
    for probabilities in ("uint8", "none"):
        refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output",
                 foreign, "--overwrite", "--probabilities", probabilities, *FAST],
                "was not written by volseg")


def test_overwrite_refuses_a_plain_folder_and_a_file(inputs: Inputs, refused: Refuse,
                                                     tmp_path: Path) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.txt").write_text("precious")
    refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output", folder,
             "--overwrite", *FAST], "was not written by volseg")
    file = tmp_path / "notes.ome.zarr"
    file.write_text("a file, not a group")
    refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output", file,
             "--overwrite", *FAST], "is a file, not an OME-Zarr folder")
    refused(["crf", "--probabilities", inputs.image, "--output", folder, "--overwrite"],
            "was not written by volseg")


def test_overwrite_replaces_volseg_s_own_output(inputs: Inputs, tmp_path: Path) -> None:
    out = tmp_path / "pred.ome.zarr"
    assert predict(inputs, out) == 0
    first = _read(out)
    assert predict(inputs, out, "--overwrite", model=inputs.other_model) == 0
    assert not np.array_equal(_read(out), first)  # really rewritten, by the other model


# ----------------------------------------------------------------- one output, one run
@pytest.mark.parametrize(("change", "message"), [
    (["--model", "other"], "was started with model sha256:"),
    (["--blend", "constant"], "was started with blend gaussian, not constant"),
    (["--overlap", "0.5"], "was started with overlap 0.25, not 0.5"),
])
def test_resume_with_other_settings_is_refused(inputs: Inputs, refused: Refuse, tmp_path: Path,
                                               change: list[str], message: str) -> None:
    out = tmp_path / "pred.ome.zarr"
    assert predict(inputs, out) == 0
    interrupted(out)
    model = inputs.other_model if change[0] == "--model" else inputs.model
    extra = [] if change[0] == "--model" else change
    err = refused(["predict", "--model", model, "--input", inputs.image, "--output", out,
                   *FAST, *extra], message)
    assert "pass --overwrite to start again" in err


def test_resume_with_the_same_settings_continues(inputs: Inputs, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ref, out = tmp_path / "ref.ome.zarr", tmp_path / "pred.ome.zarr"
    assert predict(inputs, ref) == 0
    assert predict(inputs, out) == 0
    interrupted(out)
    capsys.readouterr()
    assert predict(inputs, out, "--batch-size", "2") == 0  # execution-only options may change
    assert "resumed: 1 of 4 blocks were done, 3 recomputed" in capsys.readouterr().out
    assert np.array_equal(_read(out), _read(ref))
    assert np.array_equal(_read(out / "labels" / "semantic"), _read(ref / "labels" / "semantic"))


def test_resume_of_another_input_is_refused(inputs: Inputs, refused: Refuse,
                                            tmp_path: Path) -> None:
    other = tmp_path / "other.ome.zarr"
    write_image(np.full((16, 32, 32), 90, np.uint8), other, voxel_size=(8, 4, 4),
                pyramid=False)
    out = tmp_path / "pred.ome.zarr"
    assert predict(inputs, out) == 0
    interrupted(out)
    refused(["predict", "--model", inputs.model, "--input", other, "--output", out, *FAST],
            "was started with input image")


def test_synth_resume_with_another_seed_is_refused(refused: Refuse, tmp_path: Path) -> None:
    from volseg.cli import main

    out = tmp_path / "phantom.ome.zarr"
    argv = ["synth", "fibsem", str(out), "--shape", "16", "32", "32"]
    assert main([*argv, "--seed", "1"]) == 0
    interrupted(out)
    refused([*argv, "--seed", "2"], "was started with phantom")


# ----------------------------------------------------------------- the guard itself
def test_output_location_compares_urls_by_bucket_and_key() -> None:
    check = guard.check_output_location
    with pytest.raises(guard.InputError, match=r"\(it lies inside it\)"):
        check("memory://bucket/a/b.ome.zarr", ["memory://bucket/a"])
    with pytest.raises(guard.InputError, match=r"\(it contains it\)"):
        check("memory://bucket/a", ["memory://bucket//a/./b"])
    with pytest.raises(guard.InputError, match=r"\(it is it\)"):
        check("memory://bucket/a/../c/", ["memory://bucket/c"])
    check("memory://bucket/a", ["memory://bucket/ab", "memory://other/a", None])
    check("memory://bucket/a", ["bucket/a"])  # a local path is never a URL's input


def test_output_location_of_paths_follows_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(guard.InputError, match="overlaps the input"):
        guard.check_output_location(tmp_path / "link" / "x", [tmp_path / "real"])
    with pytest.raises(guard.InputError, match="overlaps the input"):
        guard.check_output_location(f"file://{tmp_path}/real", [tmp_path / "link"])
    guard.check_output_location(tmp_path / "real2", [tmp_path / "real"])


def test_identity_difference_names_the_first_change() -> None:
    old = guard.run_identity("predict", {"blend": "gaussian", "device": "cpu"})
    new = guard.run_identity("predict", {"blend": "constant", "device": "cuda"})
    assert "device" not in old  # execution only
    assert guard.identity_difference(old, new) == "was started with blend gaussian, not constant"
    assert guard.identity_difference(old, dict(old)) is None


def test_evaluate_report_inside_its_input(inputs: Inputs, refused: Refuse) -> None:
    refused(["evaluate", "--prediction", inputs.probabilities / "labels" / "semantic",
             "--truth", inputs.labels, "--report", inputs.labels / "report"],
            "(it lies inside it)")


def test_a_run_killed_while_creating_its_output_resumes(inputs: Inputs, tmp_path: Path) -> None:
    """The first metadata of a new group holds volseg's record: the rerun recognises it."""
    out = tmp_path / "pred.ome.zarr"
    zarr.open_group(str(out), mode="w", attributes={"volseg": {}})  # killed right here
    assert predict(inputs, out) == 0  # neither "exists; pass --overwrite" nor foreign
    assert _read(out).shape == (3, 16, 32, 32)


def test_a_foreign_group_without_volseg_s_record_is_not_resumed(inputs: Inputs,
                                                                 refused: Refuse,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "pred.ome.zarr"
    zarr.open_group(str(out), mode="w", attributes={"made by": "someone else"})
    refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output", out,
             *FAST], "exists; pass --overwrite")


def test_json_summaries_have_no_bare_nan() -> None:
    import json

    from volseg.cli._common import json_text

    text = json_text({"loss": float("nan"), "curve": [1.0, float("inf")]})
    assert json.loads(text) == {"loss": None, "curve": [1.0, None]}


# ------------------------------------------------- training commands' model files
PRETRAIN = ("image: {image}\nmethod: masked_centre\nmodel:\n  architecture: centre_voxel\n"
            "  params: {{receptive_field: 6, width: 4}}\n  patch_size: [4, 8, 8]\n"
            "epochs: 1\nsteps_per_epoch: 1\n")
WEAK = ("image: {image}\ntags: {tags}\nclasses: [background, mito]\nmodel:\n"
        "  architecture: unet25d\n  params: {{context: 1, widths: [4, 8]}}\n"
        "  patch_size: [1, 16, 16]\nepochs: 1\nsteps_per_epoch: 1\n")


def _foreign_model(folder: Path, name: str) -> Path:
    folder.mkdir()
    path = folder / name
    path.write_bytes(b"someone else's weights")
    return path


def test_pretrain_never_writes_over_its_input_or_a_foreign_model(
        inputs: Inputs, refused: Refuse, tmp_path: Path) -> None:
    config = tmp_path / "pretrain.yaml"
    config.write_text(PRETRAIN.format(image=inputs.image))
    refused(["pretrain", config, "-o", inputs.image, "--overwrite"], "(it lies inside it)")
    refused(["pretrain", config, "-o", tmp_path, "--overwrite", "--set",
             f"model_path={inputs.image}"], "overlaps the input")
    foreign = _foreign_model(tmp_path / "run", "pretrained.safetensors")
    refused(["pretrain", config, "-o", foreign.parent, "--overwrite"],
            "is not a volseg model file")
    refused(["pretrain", config, "-o", foreign.parent], "is not a volseg model file")


def test_weak_never_writes_over_its_inputs_or_foreign_outputs(
        inputs: Inputs, refused: Refuse, tmp_path: Path) -> None:
    tags = tmp_path / "tags.csv"
    tags.write_text("z0,y0,x0,z1,y1,x1,classes\n0,0,0,1,16,16,mito\n")
    config = tmp_path / "weak.yaml"
    config.write_text(WEAK.format(image=inputs.image, tags=tags))
    refused(["weak", config, "-o", inputs.image, "--overwrite"], "(it lies inside it)")
    refused(["weak", config, "-o", tmp_path, "--overwrite", "--set",
             f"pseudo_path={inputs.image}"], "overlaps the input")
    refused(["weak", config, "-o", tmp_path, "--overwrite", "--set", f"cam_path={tags}"],
            "overlaps the input")
    foreign = _foreign_model(tmp_path / "run", "cam.safetensors")
    refused(["weak", config, "-o", foreign.parent, "--overwrite"],
            "is not a volseg model file")
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "pseudo.ome.zarr").mkdir()
    (folder / "pseudo.ome.zarr" / "thesis.txt").write_text("precious")
    refused(["weak", config, "-o", folder, "--overwrite"], "was not written by volseg")
