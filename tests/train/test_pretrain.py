"""``volseg pretrain``: masked-centre and VAE pre-training lower their loss; fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import load_file
from scipy import ndimage

from volseg.cli import main
from volseg.models import load_model
from volseg.train.pretrain import PretrainConfig, Sampler, objective, pretrain
from volseg.workflow.stage import RunContext

torch.set_num_threads(2)

SHAPE = (16, 32, 32)


def _volume(tmp: Path) -> tuple[Path, np.ndarray]:
    """Smooth blobs plus a little noise: the centre is predictable from its context."""
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.normal(size=SHAPE), 2.0)
    img = (128 + 600 * smooth + rng.normal(0, 3, SHAPE)).clip(0, 255).astype(np.uint8)
    lab = (smooth > 0).astype(np.uint8)
    for name, data in (("image.zarr", img), ("labels.zarr", lab)):
        arr = zarr.open_array(tmp / name, mode="w", shape=SHAPE, chunks=(8, 16, 16),
                              dtype="uint8", zarr_format=2)
        arr[:] = data
    return tmp / "image.zarr", img


CV = {"architecture": "centre_voxel",
      "params": {"receptive_field": 6, "width": 8, "head_width": 8}, "patch_size": (4, 8, 8)}
U25 = {"architecture": "unet25d", "params": {"context": 3, "widths": [4, 8]},
       "patch_size": (1, 16, 16)}
U3 = {"architecture": "unet3d", "params": {"widths": [4, 8]}, "patch_size": (8, 16, 16)}


@pytest.mark.parametrize(("model", "method", "radius", "in_memory_mb"), [
    (CV, "masked_centre", 0, 0.0),      # read out-of-core, window by window
    (CV, "masked_centre", 1, 1024.0),   # a 3^3 centre cube: 27 output channels
    (CV, "vae", None, 1024.0),
    (U25, "masked_centre", 1, 1024.0),
    (U25, "vae", 0, 0.0),
    (U3, "masked_centre", 0, 1024.0),
])
def test_pretraining_lowers_its_loss(
    tmp_path: Path, model: dict[str, object], method: str, radius: int | None,
    in_memory_mb: float,
) -> None:
    image, _ = _volume(tmp_path)
    cfg = PretrainConfig(
        image=str(image), method=method, model=model, mask={"radius": radius, "fraction": 0.1},
        latent=4, beta=0.1, epochs=3, steps_per_epoch=6, batch_size=4,
        optimizer={"lr": 1e-2 if method == "vae" else 3e-3, "scheduler": "none"}, threads=2,
        in_memory_mb=in_memory_mb,
        normalization={"mode": "meanstd"}, augment={"gamma": None, "contrast": None},
    )
    out = pretrain(cfg, image=image, output_dir=tmp_path / "run", progress=False)
    assert out["best_val_loss"] < 0.9 * out["initial_val_loss"], out
    _, spec = load_model(tmp_path / "run" / "pretrained.safetensors")
    record = spec.training["pretraining"]
    assert record["method"] == method and record["out_of_core"] == (in_memory_mb == 0)
    assert record["best_val_loss"] == pytest.approx(out["best_val_loss"])
    assert spec.normalization.mode == "meanstd"
    if method == "vae":
        assert spec.classes[:1] == ("mu[0]",) and len(spec.classes) == 8
    elif model is CV and radius == 1:
        assert len(spec.classes) == 27
    else:
        assert spec.classes == ("intensity",)
    assert (tmp_path / "run" / "pretraining" / "metrics.csv").read_text().count("\n") == 4
    assert (tmp_path / "run" / "pretraining" / "curve.png").exists()


def test_centre_voxel_masks_stay_outside_every_other_receptive_field(tmp_path: Path) -> None:
    """Each grid output sees exactly its own masked cube: like one R^3 sample alone."""
    image, _ = _volume(tmp_path)
    cfg = PretrainConfig(image=str(image), model={**CV, "patch_size": (8, 8, 8)},
                         mask={"radius": 1, "fill": "zero"}, augment={"flips": False})
    import dask.array as da

    from volseg.train.data import Region

    spec = load_spec_for(cfg)
    img = da.from_array(np.asarray(zarr.open_array(image, mode="r")), chunks=8)
    region = Region(img, da.zeros(SHAPE, np.uint8, chunks=8), (0, 16), lut=None,
                    ignore_id=255, in_memory=True)
    sampler = Sampler(region, spec, cfg)
    x, t = sampler.sample(np.random.default_rng(3), train=False)
    r = 6
    marks = np.argwhere(t[1] > 0)
    assert len(marks) >= 1
    masked = (x[0] != t[0])
    for i, j, k in marks:
        cube = masked[i:i + r, j:j + r, k:k + r]  # the receptive field of output (i, j, k)
        c = r // 2
        expected = np.zeros_like(cube)
        expected[c - 1:c + 2, c - 1:c + 2, c - 1:c + 2] = True
        assert np.array_equal(cube, expected & (t[0][i:i + r, j:j + r, k:k + r] != 0))
    # the objective regresses the 27 masked intensities of each grid point
    from volseg.models import build_model
    from volseg.train.pretrain import Pretrainer

    net = Pretrainer(build_model(spec), None)
    loss = objective(net, torch.from_numpy(x[None]), torch.from_numpy(t[None]),
                     config=cfg, spec=spec)
    assert loss.ndim == 0 and torch.isfinite(loss)


def load_spec_for(cfg: PretrainConfig):  # type: ignore[no-untyped-def]
    from volseg.models import ModelSpec, Normalization
    from volseg.train.pretrain import channel_names

    return ModelSpec(architecture=cfg.model.architecture, params=cfg.model.params,
                     classes=channel_names(cfg, "centre_voxel"), ignore_id=None,
                     patch_size=cfg.model.patch_size,
                     normalization=Normalization(mode="meanstd", mean=0.0, std=1.0))


def test_pretrain_stage_then_fine_tune_with_init(tmp_path: Path) -> None:
    from volseg.stages import pretrain as pre_stage
    from volseg.stages import train as train_stage

    image, _ = _volume(tmp_path)
    ctx = RunContext(workdir=tmp_path / "wf", base_dir=tmp_path)
    pre = pre_stage.Config(image=str(image), model=U25, epochs=1, steps_per_epoch=2,
                           batch_size=2, threads=2)
    summary = pre_stage.run(pre, ctx)
    assert Path(summary["model"]) == tmp_path / "wf" / "pretrained.safetensors"
    file = load_file(str(tmp_path / "wf" / "pretrained.safetensors"))
    cfg = train_stage.Config(
        image=str(image), labels=str(tmp_path / "labels.zarr"), classes=("low", "high"),
        model=U25, split={"validation": [[12, 16]], "gap": 1}, epochs=1, steps_per_epoch=1,
        batch_size=2, threads=2, init="pretrained.safetensors", freeze_backbone_epochs=1,
    )
    assert "pretrained.safetensors" in cfg.reads()
    train_stage.run(cfg, ctx)
    _, spec = load_model(tmp_path / "wf" / "model.safetensors")
    init = spec.training["init"]
    assert init["pretraining"]["method"] == "masked_centre" and not init["same_classes"]
    tuned = load_file(str(tmp_path / "wf" / "model.safetensors"))
    frozen = [k for k in file if k not in init["reinitialised"]]
    assert frozen and [k for k in frozen if not torch.equal(tuned[k], file[k])] == []


def test_pretrain_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, _ = _volume(tmp_path)
    cfg = tmp_path / "pre.yaml"
    cfg.write_text(f"image: {image}\nmethod: masked_centre\nmodel:\n"
                   "  architecture: centre_voxel\n  params: {receptive_field: 6, width: 4}\n"
                   "  patch_size: [4, 8, 8]\nmask: {radius: 3}\nepochs: 1\n"
                   "steps_per_epoch: 1\n")
    assert main(["pretrain", str(cfg), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "mask.radius" in err and "at most 2" in err
    assert main(["pretrain", str(cfg), "--set", "method=mae"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "method" in err
    assert main(["pretrain", str(cfg), "-o", str(tmp_path / "o"), "--set", "mask.radius=1",
                 "--set", "threads=2"]) == 0
    _, spec = load_model(tmp_path / "o" / "pretrained.safetensors")
    assert len(spec.classes) == 27
