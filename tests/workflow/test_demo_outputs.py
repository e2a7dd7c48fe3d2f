"""``workflows/demo.yaml`` (shrunk) in NGFF 0.5: every output validates and opens in napari.

The shipped demo runs once with ``--set`` overrides that make it small (a 16 × 128 ×
128 phantom, one short epoch); every OME-Zarr group it writes is then checked by
``ome-zarr-models`` and ``ome_zarr``'s reader, and opened headless with napari and
napari-ome-zarr exactly as the preview stage's printed command does (napari's
``ViewerModel``: the layers, without a window or OpenGL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from volseg.colors import IGNORE_NAME, class_rgba
from volseg.io.omezarr import group_version, image_of
from volseg.io.validation import validate
from volseg.workflow.runner import run_workflow
from volseg.workflow.schema import load_workflow

pytestmark = pytest.mark.slow  # ~40-60 s on 2 cores: the whole pipeline plus napari

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["cytoplasm", "cell membrane", "mitochondrion", "mitochondrial membrane", "synapse",
           "vesicle", "undefined"]
SHRINK = (
    "synth.shape=[16, 128, 128]", "train.epochs=1", "train.steps_per_epoch=2",
    "train.batch_size=2", "train.threads=1", "train.early_stopping=null",
    "train.max_minutes=null", "train.model.params={context: 5, widths: [8, 16], num_res_units: 0}",
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo") / "run"
    wf = load_workflow(ROOT / "workflows" / "demo.yaml", [f"output_dir={out}", *SHRINK])
    assert wf.config.output.ngff == "0.5"  # type: ignore[attr-defined]  # the default
    outcomes = run_workflow(wf, base_dir=out.parent)
    assert [o.status for o in outcomes] == ["ran"] * len(outcomes)
    return out, outcomes[-1].summary


EXPECTED = {  # every OME-Zarr group the demo writes, and what it validates as
    "image.ome.zarr": "Image",
    "image.ome.zarr/labels": "Labels",
    "image.ome.zarr/labels/truth": "ImageLabel",
    "image.ome.zarr/labels/annotation": "ImageLabel",
    "prediction.ome.zarr": "Image",
    "prediction.ome.zarr/labels": "Labels",
    "prediction.ome.zarr/labels/semantic": "ImageLabel",
    "crf.ome.zarr": "ImageLabel",
    "instances.ome.zarr": "ImageLabel",
    "instances_truth.ome.zarr": "ImageLabel",  # the truth's mitochondria as objects
}


def test_every_output_validates_as_sharded_ngff_05(demo: tuple[Path, dict[str, Any]]) -> None:
    out, _ = demo
    groups = {p.relative_to(out).as_posix() for p in out.rglob("zarr.json")
              if zarr.open(str(p.parent), mode="r").metadata.node_type == "group"}
    assert {g.removesuffix("/zarr.json") for g in groups} == set(EXPECTED)
    for name, model in EXPECTED.items():
        result = validate(out / name)
        assert (result.model, result.version) == (model, "0.5"), name
        if model != "Labels":
            level0 = zarr.open_array(str(out / name / "0"), mode="r")
            assert level0.shards is not None, name  # every array is sharded
    # the standalone label images point at the image they belong to
    for name in ("crf.ome.zarr", "instances.ome.zarr", "instances_truth.ome.zarr"):
        assert image_of(out / name) == (out / "image.ome.zarr").resolve()
    assert group_version(out / "image.ome.zarr") == "0.5"


def _open_in_napari(command: list[str]) -> Any:
    napari = pytest.importorskip("napari", reason="napari is not installed (dev extra)")
    pytest.importorskip("napari_ome_zarr", reason="napari-ome-zarr is not installed")
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    assert command[:3] == ["napari", "--plugin", "napari-ome-zarr"]
    _initialize_plugins()
    viewer = ViewerModel()
    for path in command[3:]:  # what `napari --plugin napari-ome-zarr P...` opens
        viewer.open(path, plugin="napari-ome-zarr")
    assert napari.__version__
    return viewer


def _label_colours(layer: Any) -> dict[int, tuple[int, ...]]:
    return {int(k): tuple(round(float(v) * 255) for v in rgba)
            for k, rgba in layer.colormap.color_dict.items() if k is not None}


def test_napari_opens_the_products_with_names_colours_and_nm_scale(
    demo: tuple[Path, dict[str, Any]]
) -> None:
    _, preview = demo
    viewer = _open_in_napari(preview["napari"])
    layers = {layer.name: layer for layer in viewer.layers}
    for layer in layers.values():  # every layer in nanometres, 5 nm voxels
        assert tuple(layer.scale) == (5.0, 5.0, 5.0), layer.name
        assert [str(u) for u in layer.units] == ["nanometer"] * 3, layer.name
    images = [n for n, layer in layers.items() if type(layer).__name__ == "Image"]
    labels = [n for n, layer in layers.items() if type(layer).__name__ == "Labels"]
    assert sum(1 for n in images if not n.startswith("prediction")) == 1  # the EM image
    # probabilities: one image layer per class, named and coloured after the class
    for i, name in enumerate(CLASSES):
        layer = layers[f"prediction: {name}"]
        assert np.allclose(layer.colormap.colors[-1][:3], np.array(class_rgba(i)[:3]) / 255,
                           atol=1e-3)
        assert tuple(layer.contrast_limits) == (0.0, 255.0)
    # label images: truth, annotation, semantic, CRF (class names + colours), instances of
    # the prediction and of the truth
    assert len(labels) == 6
    named = [layers[n] for n in labels if "class" in layers[n].features]
    assert len(named) == 4
    for layer in named:
        features = layer.features.set_index("index")
        assert [features.loc[i, "class"] for i in range(7)] == CLASSES
        assert features.loc[255, "class"] == IGNORE_NAME
        colours = _label_colours(layer)
        assert all(colours[i] == class_rgba(i) for i in range(7))
        assert colours[255][3] == 0  # the ignore id is transparent
    instances = [layers[n] for n in labels if "class" not in layers[n].features]
    assert len(instances) == 2
    for layer in instances:
        assert int(np.asarray(layer.data[0]).max()) >= 0  # ids, coloured by napari itself


def test_the_demo_report_has_instance_metrics(demo: tuple[Path, dict[str, Any]]) -> None:
    import json

    out, _ = demo
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    inst = metrics["instances"]
    for key in ("voi_split", "voi_merge", "adapted_rand_error", "f1_iou50"):
        assert inst[key] is not None and inst[key] >= 0.0, key
    assert "adapted" in (out / "report" / "metrics.md").read_text().lower()


def test_preview_names_neuroglancer_sources(demo: tuple[Path, dict[str, Any]]) -> None:
    _, preview = demo
    assert preview["neuroglancer"] == [
        f"zarr3://http://localhost:8000/{Path(p).name}/" for p in preview["products"]]
    assert {Path(p).name for p in preview["products"]} == {
        "image.ome.zarr", "prediction.ome.zarr", "crf.ome.zarr", "instances.ome.zarr",
        "instances_truth.ome.zarr"}
