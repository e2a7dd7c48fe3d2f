"""Corpus: inputs the readers cannot read correctly, and configs that are not safe YAML."""

from __future__ import annotations

import os
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
from corpus import Inputs, Refuse

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


# ------------------------------------------------------------------ volumes
def test_a_fifo_is_refused_before_it_is_opened(refused: Refuse, tmp_path: Path) -> None:
    fifo = tmp_path / "x.mrc"
    os.mkfifo(fifo)
    for argv in (["info", fifo], ["convert", fifo, tmp_path / "out.ome.zarr"]):
        refused(argv, "is a FIFO (named pipe), not a file volseg can read")  # no hang


def test_a_device_is_refused(refused: Refuse, tmp_path: Path) -> None:
    (tmp_path / "zero.mrc").symlink_to("/dev/zero")
    refused(["info", tmp_path / "zero.mrc"], "is a device, not a file volseg can read")


def test_an_mrc_header_with_a_negative_dimension(refused: Refuse, tmp_path: Path) -> None:
    path = tmp_path / "neg.mrc"
    with mrcfile.new(str(path)) as mrc:
        mrc.set_data(np.zeros((4, 5, 6), np.float32))
    raw = bytearray(path.read_bytes())
    raw[0:4] = np.int32(-5).tobytes()
    path.write_bytes(bytes(raw))
    refused(["info", path], "impossible header: nx = -5")
    refused(["convert", path, tmp_path / "out.ome.zarr"], "not a readable MRC file")


def test_a_4d_mrc_is_not_read_as_channels(refused: Refuse, tmp_path: Path) -> None:
    path = tmp_path / "stack.mrc"
    with mrcfile.new(str(path)) as mrc:
        mrc.set_data(np.zeros((2, 4, 5, 6), np.float32))
    refused(["convert", path, tmp_path / "out.ome.zarr"], "a stack of 2 volumes (4-D")


def test_a_half_truncated_multipage_tiff(refused: Refuse, tmp_path: Path) -> None:
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, np.random.default_rng(0).integers(0, 255, (32, 64, 64), np.uint8))
    cut = tmp_path / "cut.tif"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    refused(["convert", cut, tmp_path / "out.ome.zarr"], "not a readable TIFF file (trunc")


# ------------------------------------------------------------------ YAML
WORKFLOW = """name: tiny
output_dir: run
synth:
  kind: fibsem
  shape: [8, 32, 32]
"""


def _workflow(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_duplicate_keys_name_both_lines(refused: Refuse, tmp_path: Path) -> None:
    top = _workflow(tmp_path, WORKFLOW + "name: again\n", "top.yaml")
    refused(["run", top, "--check"], "top.yaml:6: key 'name' is given twice (also on line 1)")
    nested = _workflow(tmp_path, WORKFLOW + "  seed: 1\n  seed: 2\n", "nested.yaml")
    refused(["run", nested, "--check"], "nested.yaml:7: key 'seed' is given twice (also on "
                                        "line 6)")


def test_an_alias_bomb_is_refused_in_bounded_time(refused: Refuse, tmp_path: Path) -> None:
    bomb = _workflow(tmp_path, WORKFLOW.replace("synth:", "bomb:\n  " + BOMB.replace(
        "\n", "\n  ").rstrip() + "\nsynth:"))
    assert bomb.stat().st_size < 2048  # a 2 KB file that would expand to 9^9 values
    start = time.perf_counter()
    refused(["run", bomb, "--check"], "expands to more than 100,000 values")
    assert time.perf_counter() - start < 10


def test_an_alias_bomb_in_a_training_config(refused: Refuse, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("model:\n  architecture: unet3d\n  params:\n    " +
                      BOMB.replace("\n", "\n    ").rstrip() + "\n")
    refused(["train", config, "--check"], "expands to more than 100,000 values")


def test_binary_and_non_utf8_files_are_refused(refused: Refuse, tmp_path: Path) -> None:
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"\x00\x01\x02PK\x03\x04" * 20)
    refused(["run", binary, "--check"], "is a binary file, not YAML text")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    refused(["run", latin, "--check"], "is not UTF-8 text")
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    refused(["run", fifo, "--check"], "is not a regular file")


def test_set_errors_are_one_line(refused: Refuse, tmp_path: Path) -> None:
    wf = _workflow(tmp_path, WORKFLOW)
    refused(["run", wf, "--check", "--set", "synth.shape=[1, 2"], "--set 'synth.shape=[1, 2': "
                                                                   "invalid YAML")
    refused(["run", wf, "--check", "--set", "synth.params={a: 1, a: 2}"],
            "key 'a' is given twice")


@pytest.mark.parametrize("check", [True, False])
def test_unknown_stage_names_are_errors(refused: Refuse, tmp_path: Path, check: bool) -> None:
    wf = _workflow(tmp_path, WORKFLOW)
    refused(["run", wf, "--stages", "sytnh", *(["--check"] if check else [])],
            "--stages: sytnh not in")


# ------------------------------------------------------------------ values
def test_instances_of_a_class_the_labels_cannot_hold(inputs: Inputs, refused: Refuse,
                                                     tmp_path: Path) -> None:
    refused(["instances", "--labels", inputs.labels, "--output", tmp_path / "obj.ome.zarr",
             "--classes", "300"], "--classes [300] cannot occur in uint8 labels")


def test_nan_in_the_crf_image_is_named(inputs: Inputs, refused: Refuse, tmp_path: Path
                                       ) -> None:
    from volseg.io.omezarr import write_image

    image = tmp_path / "nan.ome.zarr"
    data = np.full((16, 32, 32), 100.0, np.float32)
    data[3, 4, 5] = np.nan
    write_image(data, image, voxel_size=(8, 4, 4), pyramid=False)
    out = tmp_path / "crf.ome.zarr"
    refused(["crf", "--probabilities", inputs.probabilities, "--image", image, "--output",
             out, "--processes", "1"], "NaN or infinite value at (z, y, x) = (3, 4, 5)",
            may_change=[out])


def test_check_refuses_a_patch_size_the_network_cannot_take(refused: Refuse,
                                                            tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("image: i.ome.zarr\nlabels: l.ome.zarr\nclasses: [a, b]\nmodel:\n"
                      "  architecture: unet25d\n  params: {widths: [8, 16, 32, 64]}\n"
                      "  patch_size: [1, 128, 128]\n")
    refused(["train", config, "--check", "--set", "model.patch_size=[1, 100, 100]"],
            "train.yaml (--set model): model: patch_size (y, x)=(100, 100) must be a")
    wf = _workflow(tmp_path, WORKFLOW + "train:\n  classes: [a, b]\n  model:\n"
                   "    architecture: unet3d\n    patch_size: [10, 64, 64]\n")
    refused(["run", wf, "--check"], "must be a multiple of the network's down-sampling")
