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
