"""bioimage.io packages: volseg exports pass bioimageio.core, run back through the engine,
an independently built package runs, and no code path unpickles."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr

from volseg.cli import main
from volseg.errors import InputError
from volseg.models import ModelSpec, Normalization, build_model, save_model

pytest.importorskip("bioimageio.spec")
pytest.importorskip("onnxruntime")

SHAPE = (12, 40, 36)
SPECS = {
    "3d": ModelSpec(architecture="unet3d", params={"widths": [4, 8], "num_res_units": 1},
                    classes=("bg", "membrane", "mito"), patch_size=(8, 16, 16),
                    normalization=Normalization(mode="meanstd", mean=110.0, std=25.0),
                    voxel_size=(8.0, 4.0, 4.0)),
    "2.5d": ModelSpec(architecture="unet25d", params={"context": 3, "widths": [4, 8]},
                      classes=("bg", "mito"), patch_size=(1, 16, 16),
                      normalization=Normalization(mode="percentile", low=70.0, high=150.0),
                      voxel_size=(5.0, 5.0, 5.0)),
    "centre_voxel": ModelSpec(architecture="centre_voxel",
                              params={"receptive_field": 8, "width": 4, "head_width": 8},
                              classes=("bg", "membrane"), patch_size=(8, 8, 8),
                              normalization=Normalization(mode="meanstd", mean=110.0,
                                                          std=25.0)),
}


def _image(path: Path) -> Path:
    from scipy.ndimage import gaussian_filter

    from volseg.io.omezarr import write_image

    rng = np.random.default_rng(0)
    img = gaussian_filter(rng.normal(size=SHAPE), 1.5)
    img = np.clip(110 + 40 * img / img.std(), 0, 255).astype(np.uint8)
    write_image(img, path, voxel_size=(8, 4, 4), overwrite=True)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Each kind's model file and its package: 3-D through the workflow stage, 2.5-D
    through the command line, centre-voxel through the library."""
    from volseg.inference.package import Citation, PackageOptions, export_model
    from volseg.stages import export_model as stage
    from volseg.workflow.stage import RunContext

    d = tmp_path_factory.mktemp("bioimageio")
    image = _image(d / "image.ome.zarr")
    out: dict[str, tuple[Path, Path]] = {}
    for i, (kind, spec) in enumerate(SPECS.items()):
        torch.manual_seed(i)
        model = save_model(build_model(spec).eval(), spec, d / f"{kind}.safetensors")
        package = d / f"{kind}.zip"
        if kind == "3d":
            cfg = stage.Config(model=str(model), output=str(package),
                               authors=["Ada Lovelace; EPFL"], license="CC-BY-4.0",
                               cite=[Citation(text="Lucchi et al. 2012",
                                              doi="10.1109/TMI.2011.2171705")],
                               sample=str(image))
            summary = stage.run(cfg, RunContext(workdir=d))
            assert summary["weights"] == ["torchscript", "onnx"]
            again = stage.run(cfg, RunContext(workdir=d))  # same model: skipped
            assert again["status"] == "complete (skipped)"
        elif kind == "2.5d":
            assert main(["export-model", str(model), str(package), "--sample", str(image),
                         "--author", "Grace Hopper", "--license", "MIT"]) == 0
        else:
            export_model(model, package, PackageOptions(sample=str(image)))
        out[kind] = (model, package)
    out["image"] = (image, image)
    return out


@pytest.mark.parametrize("kind", list(SPECS))
def test_exported_package_passes_bioimageio_core(exported: dict[str, tuple[Path, Path]],
                                                 kind: str) -> None:
    from bioimageio.core import test_model

    _, package = exported[kind]
    summary = test_model(package)
    failed = [(d.name, [e.msg[:200] for e in d.errors]) for d in summary.details
              if d.status != "passed"]
    assert summary.status == "passed", failed
    names = {d.name for d in summary.details}
    assert any("torchscript" in n for n in names) and any("onnx" in n for n in names)


def test_exported_package_describes_volseg_geometry(
        exported: dict[str, tuple[Path, Path]]) -> None:
    with zipfile.ZipFile(exported["2.5d"][1]) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
        assert "cover.png" in z.namelist() and "weights.pt" not in z.namelist()
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "y", "x"]
    assert inp["axes"][1]["channel_names"] == ["z-1", "z+0", "z+1"]
    assert "3 consecutive z sections (5 nm apart)" in inp["axes"][1]["description"]
    assert inp["axes"][2]["unit"] == "nanometer" and inp["axes"][2]["scale"] == 5.0
    assert inp["axes"][2]["size"] == {"min": 6, "step": 2} and out["axes"][2]["halo"] == 2
    pre = [p for p in inp["preprocessing"] if p["id"] != "ensure_dtype"]
    assert pre == [{"id": "fixed_zero_mean_unit_variance",
                    "kwargs": {"mean": 70.0, "std": 80.0}}]  # percentiles: (x - low) / (high - low)
    assert [p["id"] for p in out["postprocessing"]][:1] == ["softmax"]
    assert out["axes"][1]["channel_names"] == ["bg", "mito"]
    assert rdf["authors"] == [{"name": "Grace Hopper"}] and rdf["license"] == "MIT"
    assert rdf["config"]["volseg"]["context"] == 3 and "# Validation" in "\n" + readme
    with zipfile.ZipFile(exported["centre_voxel"][1]) as z:
        cv = yaml.safe_load(z.read("rdf.yaml"))
    z_in = cv["inputs"][0]["axes"][2]
    z_out = cv["outputs"][0]["axes"][2]
    assert z_in["size"] == {"min": 8, "step": 1} and z_out["size"]["offset"] == -7
    assert "halo" not in z_out


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(zarr.open_array(str(path / "labels" / "semantic" / "0"))[...]),
            np.asarray(zarr.open_array(str(path / "0"))[...]))


@pytest.mark.parametrize("kind", list(SPECS))
def test_package_predicts_as_the_model_file(exported: dict[str, tuple[Path, Path]],
                                            tmp_path: Path, kind: str) -> None:
    model, package = exported[kind]
    image = exported["image"][0]
    results = {}
    for name, source, backend in (("native", model, "auto"), ("torchscript", package, "torch"),
                                  ("onnx", package, "onnx")):
        out = tmp_path / f"{name}.ome.zarr"
        assert main(["predict", "--model", str(source), "--input", str(image), "--output",
                     str(out), "--probabilities", "float32", "--device", "cpu",
                     "--backend", backend, "--block", "5", "20", "18", "--no-pyramid"]) == 0
        results[name] = _read(out)
    labels, probs = results["native"]
    assert labels.shape == SHAPE and probs.shape == (len(SPECS[kind].classes), *SHAPE)
    for name in ("torchscript", "onnx"):
        assert np.array_equal(results[name][0], labels), name
        assert np.abs(results[name][1] - probs).max() < 1e-4, name
    attrs = zarr.open_group(str(tmp_path / "onnx.ome.zarr")).attrs.asdict()
    assert attrs["volseg"]["predict"]["backend"] == "onnx"


def test_predict_stage_takes_a_package(exported: dict[str, tuple[Path, Path]],
                                       tmp_path: Path) -> None:
    from volseg.stages import predict as stage
    from volseg.workflow.stage import RunContext

    model, package = exported["3d"]
    cfg = stage.Config(model=str(package), input=str(exported["image"][0]),
                       output="p.ome.zarr", probabilities="float32", device="cpu",
                       backend="onnx")
    summary = stage.run(cfg, RunContext(workdir=tmp_path))
    assert summary["computed_blocks"] == summary["total_blocks"]
    assert main(["predict", "--model", str(model), "--input", str(exported["image"][0]),
                 "--output", str(tmp_path / "n.ome.zarr"), "--probabilities", "float32",
                 "--device", "cpu"]) == 0
    assert np.array_equal(_read(tmp_path / "p.ome.zarr")[0], _read(tmp_path / "n.ome.zarr")[0])


def test_export_refusals(exported: dict[str, tuple[Path, Path]], tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    model, package = exported["3d"]
    for argv, words in (
        ([str(model), str(package)], "--overwrite"),
        ([str(model), str(tmp_path / "a.zip"), "--license", "NOPE"], "SPDX"),
        ([str(model), str(tmp_path / "a.zip"), "--cite", "x", "10.1/a"], "DOI"),
        ([str(model), str(tmp_path / "a.tar")], ".zip"),
        ([str(package), str(tmp_path / "a.zip")], "not a volseg model file"),
    ):
        assert main(["export-model", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    assert not (tmp_path / "a.zip").exists()
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("notes.txt", "someone else's archive")
    before = foreign.read_bytes()
    assert main(["export-model", str(model), str(foreign), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not a package volseg wrote" in err and err.count("\n") == 1, err
    assert foreign.read_bytes() == before


# ------------------------------------------------------------ an independent package
class _ChannelsLast(torch.nn.Module):
    """A MONAI UNet behind (batch, z, y, x, channel) axes."""

    def __init__(self) -> None:
        from monai.networks.nets import UNet

        super().__init__()
        torch.manual_seed(3)
        self.net = UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=(4, 8),
                        strides=(2,), num_res_units=1).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)


def _independent_package(folder: Path) -> _ChannelsLast:
    import onnxruntime

    folder.mkdir()
    net = _ChannelsLast()
    example = torch.zeros((1, 8, 16, 16, 1))
    dyn = {0: "b", 1: "z", 2: "y", 3: "x"}
    torch.onnx.export(net, (example,), str(folder / "net.onnx"), dynamo=False,
                      input_names=["raw"], output_names=["mask"],
                      dynamic_axes={"raw": dyn, "mask": dyn}, opset_version=17)
    rng = np.random.default_rng(1)
    test_in = (rng.normal(size=(1, 8, 16, 16, 1)) * 30 + 120).astype(np.float32)
    norm = (test_in - test_in.mean()) / (test_in.std() + 1e-6)
    session = onnxruntime.InferenceSession(str(folder / "net.onnx"))
    logits = session.run(None, {"raw": norm.astype(np.float32)})[0]
    np.save(folder / "in.npy", test_in)
    np.save(folder / "out.npy", (1 / (1 + np.exp(-logits))).astype(np.float32))
    axes = [{"type": "batch"}] + [
        {"type": "space", "id": a, "size": {"min": 4, "step": 2}, "unit": "nanometer",
         "scale": 6.0} for a in "zyx"] + [{"type": "channel", "channel_names": ["em"]}]
    out_axes = [{"type": "batch"}] + [
        {"type": "space", "id": a, "unit": "nanometer", "scale": 6.0,
         "size": {"tensor_id": "raw", "axis_id": a}} for a in "zyx"] + [
        {"type": "channel", "channel_names": ["mitochondrion"]}]
    rdf = {
        "format_version": "0.5.3", "type": "model", "name": "independent MONAI UNet",
        "description": "a MONAI UNet exported with torch.onnx, described by hand",
        "authors": [{"name": "Test Writer"}],
        "cite": [{"text": "MONAI", "doi": "10.5281/zenodo.4323058"}],
        "license": "MIT", "documentation": "README.md", "tags": ["test"],
        "inputs": [{"id": "raw", "axes": axes, "test_tensor": {"source": "in.npy"},
                    "data": {"type": "float32"},
                    "preprocessing": [{"id": "zero_mean_unit_variance"}]}],
        "outputs": [{"id": "mask", "axes": out_axes, "test_tensor": {"source": "out.npy"},
                     "data": {"type": "float32"}, "postprocessing": [{"id": "sigmoid"}]}],
        "weights": {"onnx": {"source": "net.onnx", "opset_version": 17}},
    }
    (folder / "README.md").write_text("# independent\n\n## Validation\n\nnone\n")
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    return net


def test_independent_package_runs_through_volseg_predict(tmp_path: Path) -> None:
    from bioimageio.core import test_model
    from monai.inferers import sliding_window_inference

    net = _independent_package(tmp_path / "pkg")
    assert test_model(tmp_path / "pkg" / "rdf.yaml").status == "passed"
    image = _image(tmp_path / "image.ome.zarr")
    out = tmp_path / "pred.ome.zarr"
    assert main(["predict", "--model", str(tmp_path / "pkg" / "rdf.yaml"), "--input",
                 str(image), "--output", str(out), "--probabilities", "float32",
                 "--device", "cpu", "--block", "6", "16", "20"]) == 0
    labels, probs = _read(out)
    # the reference: MONAI's sliding window over the volume normalised by its own statistics
    raw = np.asarray(zarr.open_array(str(image / "0"))[...], dtype=np.float64)
    x = torch.from_numpy(((raw - raw.mean()) / (raw.std() + 1e-6)).astype(np.float32))
    with torch.no_grad():
        ref = sliding_window_inference(x[None, None], (8, 16, 16), 4, net.net, overlap=0.25,
                                       mode="gaussian", sigma_scale=0.125)
    assert isinstance(ref, torch.Tensor)
    p_ref = torch.sigmoid(ref[0]).numpy()
    assert probs.shape == (1, *SHAPE)
    assert np.abs(probs - p_ref).max() < 1e-4
    assert np.array_equal(labels, (ref[0, 0].numpy() >= 0).astype(np.uint8))
    group = zarr.open_group(str(out)).attrs.asdict()
    assert group["volseg"]["predict"]["classes"] == ["mitochondrion"]


# --------------------------------------------------------------- what is never loaded
MARKER_NAME = "volseg-pickle-ran"


class _Payload:
    """Unpickling this runs ``touch MARKER`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _state_dict_package(folder: Path, marker: Path) -> Path:
    """A package whose only weights are a pytorch_state_dict that would run code."""
    folder.mkdir()
    (folder / "weights.pt").write_bytes(pickle.dumps(_Payload(marker)))
    np.save(folder / "in.npy", np.ones((1, 1, 16, 16, 16), np.float32))
    np.save(folder / "out.npy", np.ones((1, 1, 16, 16, 16), np.float32))
    axes = [{"type": "batch"}, {"type": "channel", "channel_names": ["em"]}] + [
        {"type": "space", "id": a, "size": 16} for a in "zyx"]
    rdf = {
        "format_version": "0.5.3", "type": "model", "name": "a pickled state dict",
        "description": "only pytorch_state_dict weights", "authors": [{"name": "X Y"}],
        "cite": [{"text": "x", "doi": "10.5281/zenodo.4323058"}], "license": "MIT",
        "documentation": "README.md",
        "inputs": [{"id": "input", "axes": axes, "test_tensor": {"source": "in.npy"}}],
        "outputs": [{"id": "output", "axes": axes, "test_tensor": {"source": "out.npy"}}],
        "weights": {"pytorch_state_dict": {
            "source": "weights.pt", "pytorch_version": "2.13",
            "architecture": {"callable": "UNet", "import_from": "monai.networks.nets",
                             "kwargs": {}}}},
    }
    (folder / "README.md").write_text("# x\n")
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    return folder / "rdf.yaml"


def _evil_torchscript(package: Path, marker: Path, target: Path) -> Path:
    """``package`` with its TorchScript data.pkl replaced by a code-running pickle."""
    payload = pickle.dumps(_Payload(marker), protocol=2)
    with zipfile.ZipFile(package) as src:
        rdf = yaml.safe_load(src.read("rdf.yaml"))
        ts_name = rdf["weights"]["torchscript"]["source"]
        with zipfile.ZipFile(io.BytesIO(src.read(ts_name))) as ts:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as evil:
                for info in ts.infolist():
                    data = payload if info.filename.endswith("/data.pkl") else \
                        ts.read(info.filename)
                    evil.writestr(info, data)
        evil_bytes = buf.getvalue()
        rdf["weights"]["torchscript"]["sha256"] = hashlib.sha256(evil_bytes).hexdigest()
        with zipfile.ZipFile(target, "w") as dst:
            for info in src.infolist():
                if info.filename == ts_name:
                    dst.writestr(info, evil_bytes)
                elif info.filename == "rdf.yaml":
                    dst.writestr(info, yaml.safe_dump(rdf))
                else:
                    dst.writestr(info, src.read(info.filename))
    return target


def test_no_code_path_unpickles(exported: dict[str, tuple[Path, Path]], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from volseg.models.backends import load_torchscript

    marker = tmp_path / MARKER_NAME
    image = str(exported["image"][0])

    def predict(model: Path, *extra: str) -> str:
        rc = main(["predict", "--model", str(model), "--input", image, "--output",
                   str(tmp_path / "out.ome.zarr"), "--device", "cpu", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1, err
        return err

    # 1. pytorch_state_dict weights (a pickle) are refused before any file is read
    err = predict(_state_dict_package(tmp_path / "sd", marker))
    assert "pytorch_state_dict" in err and "pickle" in err
    assert not marker.exists()
    # ... even when a package also has them next to weights volseg runs, they stay unread
    # (test_exported_package_describes_volseg_geometry: none are written by default)

    # 2. a TorchScript file whose data.pkl would run `touch MARKER`: refused by volseg's
    #    check (one line naming the member and the global), nothing executed
    evil = _evil_torchscript(exported["3d"][1], marker, tmp_path / "evil.zip")
    err = predict(evil, "--backend", "torch")
    assert "data.pkl" in err and "system" in err
    assert not marker.exists()
    # torch.jit.load alone (without volseg's check) refuses the payload as well: its
    # unpickler resolves only TorchScript types ("Unknown type name 'posix.system'")
    with zipfile.ZipFile(evil) as z:
        data = z.read("weights_torchscript.pt")
    with pytest.raises(RuntimeError, match="Unknown type name"):
        torch.jit.load(io.BytesIO(data))
    assert not marker.exists()
    with pytest.raises(InputError, match="not part of a TorchScript program"):
        load_torchscript(data, name="evil.pt")
    # the same package's ONNX weights are unaffected and still run
    assert main(["predict", "--model", str(evil), "--input", image, "--output",
                 str(tmp_path / "ok.ome.zarr"), "--device", "cpu", "--backend", "onnx"]) == 0
    assert not marker.exists()


class _Saver(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, "/tmp/volseg-should-not-exist.pt")
        return x


def test_torchscript_programs_that_touch_files_are_refused() -> None:
    from volseg.models.backends import load_torchscript

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_Saver()), buf)
    with pytest.raises(InputError, match="aten::save"):
        load_torchscript(buf.getvalue(), name="saver.pt")


def _edit_rdf(package: Path, target: Path, edit: object) -> Path:
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "rdf.yaml":
                rdf = yaml.safe_load(data)
                edit(rdf)  # type: ignore[operator]
                data = yaml.safe_dump(rdf).encode()
            dst.writestr(info, data)
    return target


def test_unmappable_axes_are_named(exported: dict[str, tuple[Path, Path]],
                                   tmp_path: Path) -> None:
    from volseg.models.bioimageio import read_package

    def time_axis(rdf: dict) -> None:  # a movie of 2-D frames: valid, but not a volume
        rdf["inputs"][0]["axes"][2] = {"type": "time", "id": "t", "size": 8}
        rdf["outputs"][0]["axes"][2] = {"type": "time", "id": "t",
                                        "size": {"tensor_id": "input", "axis_id": "t"}}

    def rgb(rdf: dict) -> None:
        rdf["inputs"][0]["axes"][1]["channel_names"] = ["r", "g", "b"]
        rdf["config"]["volseg"]["context"] = None

    with pytest.raises(InputError, match=r"input axis 'time' \(time\) cannot be mapped"):
        read_package(_edit_rdf(exported["3d"][1], tmp_path / "t.zip", time_axis))
    with pytest.raises(InputError, match=r"3 channels on axis 'channel' \(r, g, b\)"):
        read_package(_edit_rdf(exported["2.5d"][1], tmp_path / "rgb.zip", rgb))


@pytest.mark.slow
@pytest.mark.data
def test_lucchi_model_exports_and_passes_bioimageio_core(shared_data: Path,
                                                         tmp_path: Path) -> None:
    """The 2.5-D model of workflows/lucchi.yaml (its architecture, patch and
    normalisation), trained for a few steps on a crop of the real Lucchi volume."""
    import tifffile
    from bioimageio.core import test_model

    from volseg.inference.package import Citation, PackageOptions, export_model
    from volseg.train import train
    from volseg.train.config import TrainConfig
    from volseg.workflow.schema import load_workflow

    root = Path(__file__).resolve().parents[2]
    shipped = load_workflow(root / "workflows" / "lucchi.yaml").config.train  # type: ignore[attr-defined]
    with tifffile.TiffFile(shared_data / "lucchi" / "training.tif") as tif:
        img = np.stack([tif.pages[i].asarray()[:288, :288] for i in range(40)])
    with tifffile.TiffFile(shared_data / "lucchi" / "training_groundtruth.tif") as tif:
        lab = np.stack([tif.pages[i].asarray()[:288, :288] for i in range(40)])
    lab = (lab == 255).astype(np.uint8)
    for name, data in (("image.zarr", img), ("labels.zarr", lab)):
        arr = zarr.open_array(tmp_path / name, mode="w", shape=data.shape,
                              chunks=(8, 144, 144), dtype="uint8", zarr_format=2,
                              config={"write_empty_chunks": True})  # every chunk stored
        arr[:] = data
    cfg = shipped.model_dump(mode="json")
    cfg.update(image=str(tmp_path / "image.zarr"), labels=str(tmp_path / "labels.zarr"),
               split={"mode": "z_ranges", "train": [[0, 24]], "validation": [[30, 40]],
                      "gap": 5},
               epochs=1, steps_per_epoch=2, batch_size=2, validation_sections=1,
               max_minutes=5, threads=2, voxel_size=[5, 5, 5])
    config = TrainConfig.model_validate(cfg)
    assert config.model.architecture == "unet25d" and config.model.patch_size == (1, 256, 256)
    train(config, image=tmp_path / "image.zarr", labels=tmp_path / "labels.zarr",
          output_dir=tmp_path, progress=False)
    package = tmp_path / "lucchi.zip"
    export_model(tmp_path / "model.safetensors", package,
                 PackageOptions(license="CC-BY-4.0", cite=[Citation(
                     text="Lucchi et al. 2012", doi="10.1109/TMI.2011.2171705")]))
    summary = test_model(package)
    failed = [(d.name, [e.msg[:200] for e in d.errors]) for d in summary.details
              if d.status != "passed"]
    assert summary.status == "passed", failed
    with zipfile.ZipFile(package) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
    half = int(config.model.params["context"]) // 2  # the workflow's sections of context
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == [
        f"z{d:+d}" for d in range(-half, half + 1)]
    assert rdf["inputs"][0]["axes"][2]["size"] == {"min": 96, "step": 32}
    assert "| mitochondrion |" in readme and "[[30, 40]]" in readme


def test_workflow_section_and_command_discovery(tmp_path: Path) -> None:
    from volseg.cli import _requested_command
    from volseg.errors import ConfigError
    from volseg.workflow.schema import load_workflow, stage_modules

    names = [m.NAME for m in stage_modules()]
    assert names.index("export_model") > names.index("preview")  # previews become covers
    path = tmp_path / "wf.yaml"
    path.write_text("name: share\nexport_model:\n  license: CC-BY-4.0\n"
                    "  cite: [{text: Lucchi et al. 2012, doi: 10.1109/TMI.2011.2171705}]\n"
                    "predict: {model: model.bioimageio.zip, backend: onnx}\n")
    wf = load_workflow(path)
    assert wf.config.export_model.cite[0].doi == "10.1109/TMI.2011.2171705"  # type: ignore[attr-defined]
    assert wf.config.predict.backend == "onnx"  # type: ignore[attr-defined]
    path.write_text("name: share\nexport_model: {licence: MIT}\n")
    with pytest.raises(ConfigError, match="licence"):
        load_workflow(path)
    assert _requested_command(["export-model", "m.safetensors", "o.zip"]) == "export_model"
