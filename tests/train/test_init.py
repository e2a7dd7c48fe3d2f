"""``train.init``: start from a model file (backbone loaded, head re-initialised, frozen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import load_file

from volseg.cli import main
from volseg.errors import ConfigError
from volseg.models import ModelSpec, Normalization, build_model, load_model, save_model
from volseg.models.transfer import head_tensors, init_weights
from volseg.train import TrainConfig, train

torch.set_num_threads(2)

SHAPE = (12, 24, 24)
CV = {"receptive_field": 6, "width": 4, "head_width": 6}


def _spec(classes: tuple[str, ...], **params: object) -> ModelSpec:
    return ModelSpec(architecture="centre_voxel", params={**CV, **params}, classes=classes,
                     patch_size=(2, 4, 4),
                     normalization=Normalization(mode="meanstd", mean=100.0, std=30.0))


def _saved(tmp: Path, classes: tuple[str, ...], seed: int, **params: object) -> Path:
    torch.manual_seed(seed)
    spec = _spec(classes, **params)
    module = build_model(spec)
    with torch.no_grad():  # non-trivial batch-norm statistics, so that loading shows
        for name, t in module.state_dict().items():
            if "running" in name:
                t.uniform_(0.5, 1.5)
    return save_model(module, spec, tmp / f"m{seed}.safetensors")


def _volume(tmp: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    lab = (rng.random(SHAPE) < 0.3).astype(np.uint8)
    img = (90 + 60 * lab + rng.normal(0, 8, SHAPE)).clip(0, 255).astype(np.uint8)
    for name, data in (("image.zarr", img), ("labels.zarr", lab)):
        arr = zarr.open_array(tmp / name, mode="w", shape=SHAPE, chunks=(6, 12, 12),
                              dtype="uint8", zarr_format=2)
        arr[:] = data
    return tmp / "image.zarr", tmp / "labels.zarr"


def test_head_is_what_follows_the_number_of_classes() -> None:
    assert head_tensors(_spec(("a", "b"))) == {"head.3.weight", "head.3.bias"}
    unet = ModelSpec(architecture="unet25d", params={"context": 3, "widths": [4, 8]},
                     classes=("a", "b"), patch_size=(1, 16, 16))
    head = head_tensors(unet)
    names = list(build_model(unet).state_dict())
    assert head and all(n in names for n in head) and len(head) < len(names) // 4


def test_backbone_loaded_head_reinitialised_when_classes_differ(tmp_path: Path) -> None:
    path = _saved(tmp_path, ("intensity",), seed=1)
    file = load_file(str(path))
    spec = _spec(("background", "mito"))
    torch.manual_seed(7)
    module = build_model(spec)
    fresh = {k: v.clone() for k, v in module.state_dict().items()}
    report = init_weights(module, spec, path)
    assert not report.same_classes
    assert set(report.reinitialised) == {"head.3.weight", "head.3.bias"}
    state = module.state_dict()
    for name, value in state.items():
        if name in report.reinitialised:
            assert torch.equal(value, fresh[name])  # the fresh initialisation, untouched
        else:  # every backbone tensor (and the head's hidden layer) equals the file's
            assert torch.equal(value, file[name].to(value.dtype)), name
    assert report.summary()["loaded_tensors"] == len(state) - 2
    unet = ModelSpec(architecture="unet25d", params={"context": 3, "widths": [4, 8]},
                     classes=("a", "b"), patch_size=(1, 16, 16))
    assert "model.2.0.adn.N.num_batches_tracked" in head_tensors(unet)  # the head's norm


def test_same_classes_load_everything(tmp_path: Path) -> None:
    path = _saved(tmp_path, ("background", "mito"), seed=2)
    file = load_file(str(path))
    spec = _spec(("background", "mito"))
    module = build_model(spec)
    report = init_weights(module, spec, path)
    assert report.same_classes and not report.reinitialised
    for name, value in module.state_dict().items():
        assert torch.equal(value, file[name].to(value.dtype))


def test_mismatched_shapes_are_one_line_naming_the_layer(tmp_path: Path) -> None:
    path = _saved(tmp_path, ("intensity",), seed=3, width=8)
    spec = _spec(("background", "mito"))
    with pytest.raises(ConfigError) as err:
        init_weights(build_model(spec), spec, path)
    msg = str(err.value)
    assert "\n" not in msg and "'backbone.0.weight'" in msg and "(8, 1, 3, 3, 3)" in msg
    other = ModelSpec(architecture="unet25d", params={"context": 3, "widths": [4, 8]},
                      classes=("a", "b"), patch_size=(1, 16, 16))
    with pytest.raises(ConfigError, match="holds a centre_voxel network"):
        init_weights(build_model(other), other, path)


def _config(image: Path, labels: Path, **kw: object) -> TrainConfig:
    return TrainConfig(
        image=str(image), labels=str(labels), classes=("background", "mito"),
        model={"architecture": "centre_voxel", "params": CV, "patch_size": (2, 4, 4)},
        split={"validation": [[9, 12]], "gap": 1}, epochs=1, steps_per_epoch=2,
        batch_size=2, threads=2, early_stopping=None, **kw,
    )


def test_freeze_backbone_epochs_train_only_the_head(tmp_path: Path) -> None:
    image, labels = _volume(tmp_path)
    path = _saved(tmp_path, ("intensity",), seed=4)
    file = load_file(str(path))
    cfg = _config(image, labels, init=str(path), freeze_backbone_epochs=1,
                  optimizer={"lr": 0.05, "scheduler": "none"}, select_metric="macro_iou")
    train(cfg, image=image, labels=labels, output_dir=tmp_path / "frozen", progress=False)
    state = load_file(str(tmp_path / "frozen" / "model.safetensors"))
    _, spec = load_model(tmp_path / "frozen" / "model.safetensors")
    for name, value in state.items():
        if name.startswith("backbone."):  # weights and batch-norm statistics untouched
            assert torch.equal(value, file[name]), name
    assert spec.normalization == _spec(("x",)).normalization  # the file's statistics
    init = spec.training["init"]
    assert init["reinitialised"] == ["head.3.bias", "head.3.weight"]
    assert not init["same_classes"]
    # unfrozen after the first epoch: the backbone moves
    cfg2 = cfg.model_copy(update={"epochs": 2, "validate_every": 2})
    train(cfg2, image=image, labels=labels, output_dir=tmp_path / "thawed", progress=False)
    state2 = load_file(str(tmp_path / "thawed" / "model.safetensors"))
    assert not torch.equal(state2["backbone.0.weight"], file["backbone.0.weight"])


def test_freeze_needs_init() -> None:
    with pytest.raises(ValueError, match="freeze_backbone_epochs needs init"):
        _config(Path("i"), Path("l"), freeze_backbone_epochs=2)


def test_continued_training_and_cli_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, labels = _volume(tmp_path)
    first = tmp_path / "a"
    train(_config(image, labels), image=image, labels=labels, output_dir=first,
          progress=False)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"image: {image}\nlabels: {labels}\nclasses: [background, mito]\n"
        f"model: {{architecture: centre_voxel, params: {CV}, patch_size: [2, 4, 4]}}\n"
        "split: {validation: [[9, 12]], gap: 1}\n"
        "epochs: 1\nsteps_per_epoch: 1\nbatch_size: 2\nthreads: 2\n"
        "optimizer: {lr: 1.0e-12, scheduler: none}\n"
        f"init: {first / 'model.safetensors'}\n"
    )
    assert main(["train", str(cfg), "-o", str(tmp_path / "b")]) == 0
    a = load_file(str(first / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    _, spec = load_model(tmp_path / "b" / "model.safetensors")
    assert spec.training["init"]["same_classes"] is True
    for name in a:  # resumed from the weights (a negligible step taken)
        if "running" not in name and "num_batches" not in name:
            assert torch.allclose(a[name], b[name], atol=1e-6), name
    capsys.readouterr()
    wide = {**CV, "width": 8}
    assert main(["train", str(cfg), "-o", str(tmp_path / "c"),
                 "--set", f"model.params={wide}".replace(" ", "")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "init:" in err and "'backbone.0.weight'" in err
