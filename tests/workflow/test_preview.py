"""Preview rendering: colours land where the labels are, planes are the right slices."""

from __future__ import annotations

import numpy as np
import pytest

from volseg.preview import class_colour, overlay, plane_slices, save_panels, to_grey


def test_to_grey_scales_by_percentiles_and_survives_flat_images() -> None:
    ramp = np.arange(100, dtype=np.float32).reshape(10, 10)
    grey = to_grey(ramp, low=0, high=100)
    assert grey.min() == 0.0 and grey.max() == 1.0
    assert np.all(to_grey(np.full((4, 4), 7.0)) == 0.0)


def test_overlay_colours_only_visible_labels() -> None:
    image = np.zeros((4, 4), dtype=np.uint8)
    labels = np.array([[0, 1, 255, 2]] * 4, dtype=np.uint8)
    rgb = overlay(image, labels, alpha=1.0, hidden=(0,), ignore_id=255)
    assert np.allclose(rgb[:, 0], 0.0)  # hidden background stays grey (black here)
    assert np.allclose(rgb[:, 2], 0.0)  # ignore id stays uncoloured
    assert np.allclose(rgb[0, 1], class_colour(1))
    assert np.allclose(rgb[0, 3], class_colour(2))
    with pytest.raises(ValueError, match="differs"):
        overlay(image, labels[:2])


def test_plane_slices_pick_the_planes_through_the_position() -> None:
    volume = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    planes = plane_slices(volume.shape, (1, 2, 3))
    assert np.array_equal(volume[planes["xy"]], volume[1])
    assert np.array_equal(volume[planes["xz"]], volume[:, 2])
    assert np.array_equal(volume[planes["yz"]], volume[:, :, 3])
    with pytest.raises(ValueError, match="outside"):
        plane_slices(volume.shape, (3, 0, 0))


def test_save_panels_writes_a_png(tmp_path) -> None:
    rgb = np.random.default_rng(0).random((20, 30, 3))
    target = tmp_path / "sub" / "xy.png"
    save_panels(target, [("a", rgb), ("b", rgb)], title="t", aspect=2.0)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _png(path) -> np.ndarray:  # type: ignore[no-untyped-def]
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _has_colour(rgb: np.ndarray, colour: tuple[int, int, int], tol: int = 1) -> bool:
    return bool((np.abs(rgb - np.asarray(colour)).max(axis=-1) <= tol).any())


def test_the_legend_shows_the_class_colours_of_the_label_metadata(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from volseg.colors import class_rgb
    from volseg.preview import legend_entries

    entries, note = legend_entries(["background", "mito", "membrane"], [0, 1, 2],
                                   hidden=(0,), ignore_id=255)
    assert [name for name, _ in entries] == ["1 mito", "2 membrane"]
    assert note == "not coloured: 0 background, 255 not annotated"
    grey = np.full((20, 30, 3), 0.5)  # no labels in the panels: colours come from the legend
    target = tmp_path / "xy.png"
    save_panels(target, [("image", grey)], title="t", legend=entries, note=note)
    rgb = _png(target)
    assert _has_colour(rgb, class_rgb(1)) and _has_colour(rgb, class_rgb(2))
    save_panels(tmp_path / "plain.png", [("image", grey)], title="t")
    assert not _has_colour(_png(tmp_path / "plain.png"), class_rgb(1))


def _stage_run(tmp_path, synth: str):  # type: ignore[no-untyped-def]
    import textwrap

    from volseg.workflow.runner import run_workflow
    from volseg.workflow.schema import load_workflow

    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: tiny
        output_dir: out
        synth: {synth}
        preview: {{prediction: null, max_size: 64}}
        """))
    run_workflow(load_workflow(path), base_dir=tmp_path)
    return tmp_path / "out"


def test_preview_of_a_volume_has_three_planes_and_the_truth_legend(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from volseg.colors import class_rgb
    from volseg.io.multiscales import class_names

    out = _stage_run(tmp_path, "{kind: fibsem, shape: [16, 48, 40], seed: 3, chunks: [8, 32, 32]}")
    assert sorted(p.name for p in (out / "preview").glob("*.png")) == ["xy.png", "xz.png",
                                                                     "yz.png"]
    names = class_names(out / "image.ome.zarr" / "labels" / "truth")
    assert names and len(names) == 7
    colours = {tuple(c["rgba"][:3]) for c in
               __import__("json").loads((out / "image.ome.zarr" / "labels" / "truth" /
                                         "zarr.json").read_text())["attributes"]["ome"]
               ["image-label"]["colors"] if c["label-value"] in (1, 6)}
    rgb = _png(out / "preview" / "xz.png")
    for colour in colours | {class_rgb(6)}:  # class 6 is rare: only the legend has it
        assert _has_colour(rgb, colour), colour  # type: ignore[arg-type]


def test_a_stack_of_micrographs_is_previewed_section_by_section(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = _stage_run(tmp_path, "{kind: em2d, shape: [5, 64, 64], seed: 1}")
    assert [p.name for p in (out / "preview").glob("*.png")] == ["xy.png"]  # no 5-px strips
    rgb = _png(out / "preview" / "xy.png")
    assert rgb.shape[0] > 2 * rgb.shape[1]  # 4 rows of image + truth panels


def test_every_output_file_is_mode_0644(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = _stage_run(tmp_path, "{kind: em2d, shape: [2, 32, 32], seed: 1}")
        from volseg.models import build_model, save_model
        from volseg.models.spec import ModelSpec

        spec = ModelSpec(architecture="unet25d", params={"context": 1, "widths": [4, 8]},
                         in_channels=1, classes=["a", "b"], patch_size=(1, 16, 16))
        save_model(build_model(spec), spec, out / "model.safetensors")
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files) and len(files) > 10
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert {m for m in modes.values()} == {"0o644"}, modes
