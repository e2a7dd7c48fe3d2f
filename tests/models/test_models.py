"""Model registry, spec, centre-voxel geometry and pickle-free model files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from volseg.errors import InputError, OutputExistsError
from volseg.models import (
    ModelSpec,
    Normalization,
    available_architectures,
    build_model,
    layer_plan,
    load_model,
    read_spec,
    save_model,
)

torch.set_num_threads(2)

SMALL = {
    "unet3d": ({"widths": [4, 8]}, (8, 16, 16)),
    "unet3d-basic": ({"variant": "basic", "widths": [4, 4, 8, 8, 8, 4]}, (16, 16, 16)),
    "unet3d-attention": ({"variant": "attention", "widths": [4, 8]}, (8, 16, 16)),
    "unet3d-segresnet": ({"variant": "segresnet", "widths": [4], "blocks_down": [1, 1]},
                         (8, 16, 16)),
    "unet25d": ({"widths": [4, 8], "context": 3}, (1, 16, 16)),
    "unet25d-attention": ({"variant": "attention", "widths": [4, 8], "context": 1},
                          (1, 16, 16)),
    "unet25d-downsampled": ({"widths": [4, 8], "context": 3, "downsample": 2}, (1, 16, 16)),
    "centre_voxel": ({"receptive_field": 6, "width": 4, "head_width": 8}, (3, 3, 3)),
    "centre_voxel-dilated": ({"receptive_field": 9, "variant": "dilated", "width": 4,
                              "head_width": 8}, (2, 2, 2)),
}


def _spec(key: str, **extra: object) -> ModelSpec:
    params, patch = SMALL[key]
    return ModelSpec(
        architecture=key.split("-")[0], params=params, classes=("bg", "mito", "membrane"),
        patch_size=patch,
        normalization=Normalization(mode="meanstd", mean=100.0, std=20.0),
        voxel_size=(5.0, 5.0, 5.0), training={"epochs": 3}, **extra,  # type: ignore[arg-type]
    )


def _input(spec: ModelSpec, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if spec.kind == "2.5d":
        return torch.randn(n, spec.in_channels * (spec.context or 1), *spec.patch_size[1:],
                           generator=g)
    return torch.randn(n, spec.in_channels, *spec.input_size, generator=g)


def test_registry_names() -> None:
    assert set(available_architectures()) >= {"unet3d", "unet25d", "centre_voxel"}


@pytest.mark.parametrize("key", sorted(SMALL))
def test_save_load_round_trip_gives_same_outputs(key: str, tmp_path: Path) -> None:
    spec = _spec(key)
    module = build_model(spec)
    # one training step so that weights and BatchNorm running stats differ from init
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    module.train()
    x = _input(spec)
    module(x).square().mean().backward()
    opt.step()
    module.eval()
    with torch.no_grad():
        expected = module(x)
    path = save_model(module, spec, tmp_path / "model.safetensors")
    loaded, loaded_spec = load_model(path)
    assert loaded_spec == spec
    assert not loaded.training
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    with torch.no_grad():
        got = loaded(x)
    assert got.shape[:2] == (2, 3)
    assert torch.equal(got, expected)
    # a freshly built network differs, so the equality above is not vacuous
    with torch.no_grad():
        assert not torch.equal(build_model(spec).eval()(x), expected)


def test_output_shapes_follow_kind() -> None:
    s3 = _spec("unet3d")
    assert s3.kind == "3d" and s3.context is None and s3.receptive_field is None
    assert tuple(build_model(s3)(_input(s3)).shape) == (2, 3, 8, 16, 16)
    s25 = _spec("unet25d")
    assert s25.kind == "2.5d" and s25.context == 3 and s25.halo[0] == (1, 1)
    assert s25.input_size == (3, 16, 16)
    assert tuple(build_model(s25)(_input(s25)).shape) == (2, 3, 16, 16)
    scv = _spec("centre_voxel")
    assert scv.kind == "centre_voxel" and scv.receptive_field == 6
    # even R = 6: 3 voxels before the centre, 2 after
    assert scv.halo == ((3, 2), (3, 2), (3, 2)) and scv.input_size == (8, 8, 8)
    assert tuple(build_model(scv)(_input(scv)).shape) == (2, 3, 3, 3, 3)


@pytest.mark.parametrize("r", [2, 3, 4, 5, 8, 15, 16, 17, 31, 32, 33, 64])
@pytest.mark.parametrize("variant", ["plain", "dilated"])
def test_layer_plan_reaches_exact_receptive_field(r: int, variant: str) -> None:
    plan = layer_plan(r, variant)  # type: ignore[arg-type]
    assert 1 + sum((k - 1) * d for k, d in plan) == r
    if variant == "dilated" and r >= 16:
        assert len(plan) < len(layer_plan(r, "plain"))


@pytest.mark.parametrize("key", ["centre_voxel", "centre_voxel-dilated"])
def test_centre_voxel_dense_equals_per_voxel(key: str) -> None:
    """A block of R + n - 1 gives n outputs, each equal to classifying its own R³ cube."""
    spec = _spec(key)
    r = spec.receptive_field
    assert r is not None
    module = build_model(spec)
    module.train()
    module(torch.randn(2, 1, r + 2, r + 2, r + 2)).sum().backward()  # perturb BN stats
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    module.eval()
    n = 4
    block = torch.randn(1, 1, r + n - 1, r + n - 1, r + n - 1)
    with torch.no_grad():
        dense = module(block)
        assert dense.shape[-3:] == (n, n, n)
        for z, y, x in [(0, 0, 0), (1, 2, 3), (3, 3, 3), (2, 0, 1)]:
            cube = block[..., z:z + r, y:y + r, x:x + r]
            single = module(cube)
            assert single.shape[-3:] == (1, 1, 1)
            torch.testing.assert_close(single[..., 0, 0, 0], dense[..., z, y, x],
                                       rtol=1e-5, atol=1e-5)


def test_spec_json_round_trip_fills_defaults() -> None:
    spec = ModelSpec(architecture="centre_voxel", params={"receptive_field": 16},
                     classes=("a", "b"), patch_size=(8, 8, 8))
    assert spec.params["variant"] == "plain" and spec.params["width"] == 32
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec and again.receptive_field == 16
    with pytest.raises(ValidationError):
        spec.patch_size = (1, 1, 1)  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"architecture": "nope"}, "unknown architecture"),
        ({"params": {"widths": [4, 8], "bogus": 1}}, "bogus"),
        ({"patch_size": (8, 15, 16)}, "multiple"),
        ({"architecture": "unet25d", "patch_size": (3, 16, 16)}, "z = 1"),
        ({"architecture": "unet25d", "params": {"context": 2}, "patch_size": (1, 16, 16)},
         "odd"),
        ({"classes": ("a", "a")}, "unique"),
        ({"classes": ()}, "classes"),
    ],
)
def test_spec_rejects_bad_values(kwargs: dict, match: str) -> None:
    base = {"architecture": "unet3d", "params": {"widths": [4, 8]}, "classes": ("a", "b"),
            "patch_size": (8, 16, 16)}
    base.update(kwargs)
    with pytest.raises(ValidationError, match=match):
        ModelSpec(**base)


def test_normalization_values() -> None:
    block = np.array([[0, 50, 100]], dtype=np.uint8)
    ms = Normalization(mode="meanstd", mean=50.0, std=25.0)
    out = ms.apply(block)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[-2.0, 0.0, 2.0]])
    pc = Normalization(mode="percentile", low=0.0, high=200.0)
    np.testing.assert_array_equal(pc.apply(block), [[0.0, 0.25, 0.5]])
    np.testing.assert_array_equal(Normalization().apply(block), block.astype(np.float32))
    # statistics from a sample: 0..100, percentiles 5 and 95 are 5 and 95
    fitted = Normalization.from_sample(np.arange(101), mode="percentile")
    assert (fitted.low, fitted.high) == (5.0, 95.0)
    fitted_ms = Normalization.from_sample(np.array([1.0, 3.0]), mode="meanstd")
    assert (fitted_ms.mean, fitted_ms.std) == (2.0, 1.0)
    with pytest.raises(ValidationError):
        Normalization(mode="meanstd", mean=1.0, std=0.0)
    with pytest.raises(ValidationError):
        Normalization(mode="percentile", low=3.0, high=3.0)


# -- refusing files that are not volseg models ---------------------------------------
class _Evil:
    """Unpickling this creates a marker file: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_load_refuses_torch_save_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.safetensors"
    torch.save({"state_dict": {}, "evil": _Evil(marker)}, path)
    with pytest.raises(InputError, match="pickle") as info:
        load_model(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_load_refuses_plain_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(InputError, match="pickle"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("start", [b"\x80\x05", b"PK"])
def test_a_safetensors_header_length_that_looks_like_a_pickle_or_zip_is_read(
        tmp_path: Path, start: bytes) -> None:
    """Header lengths 0x0580 (b"\\x80\\x05", pickle protocol 5) or 0x4b50 ("PK") are valid."""
    from volseg.models.files import _read_header

    target = int.from_bytes(start, "little")
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path), metadata={"pad": ""})
    first = int.from_bytes(path.read_bytes()[:8], "little")
    for pad in range(target - first - 16, target):  # grow the metadata to that length
        save_file({"weight": torch.zeros(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[:2] == start:
            break
    assert path.read_bytes()[:2] == start
    assert _read_header(path)["__metadata__"]["pad"]


def test_load_refuses_foreign_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(InputError, match="not a volseg model"):
        load_model(path)


def test_load_refuses_weights_not_matching_spec(tmp_path: Path) -> None:
    small = _spec("unet3d")
    other = ModelSpec(**{**small.model_dump(), "params": {"widths": [4, 16]}})
    module = build_model(other)
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    path = tmp_path / "model.safetensors"
    save_file(state, str(path), metadata={
        "format": "volseg-model", "volseg_format_version": "1", "volseg_spec": small.to_json()})
    with pytest.raises(InputError, match="weights do not match the spec"):
        load_model(path)
    # dropping a tensor is also refused
    state.pop(sorted(state)[0])
    save_file(state, str(path), metadata={
        "format": "volseg-model", "volseg_format_version": "1", "volseg_spec": other.to_json()})
    with pytest.raises(InputError, match="missing"):
        load_model(path)


def test_load_refuses_missing_truncated_newer_and_bad_spec(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "absent.safetensors")
    spec = _spec("centre_voxel")
    good = save_model(build_model(spec), spec, tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match="truncated"):
        load_model(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"hello world, not a model")
    with pytest.raises(InputError, match="not a safetensors"):
        load_model(tmp_path / "junk.safetensors")
    state = {k: v.contiguous() for k, v in build_model(spec).state_dict().items()}
    save_file(state, str(tmp_path / "v9.safetensors"), metadata={
        "format": "volseg-model", "volseg_format_version": "9", "volseg_spec": spec.to_json()})
    with pytest.raises(InputError, match="version"):
        load_model(tmp_path / "v9.safetensors")
    bad = json.loads(spec.to_json())
    bad["architecture"] = "resnet9000"
    save_file(state, str(tmp_path / "bad.safetensors"), metadata={
        "format": "volseg-model", "volseg_format_version": "1", "volseg_spec": json.dumps(bad)})
    with pytest.raises(InputError, match="invalid model spec"):
        read_spec(tmp_path / "bad.safetensors")


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    spec = _spec("centre_voxel")
    module = build_model(spec)
    path = save_model(module, spec, tmp_path / "m.safetensors")
    with pytest.raises(OutputExistsError):
        save_model(module, spec, path)
    save_model(module, spec, path, overwrite=True)
    assert read_spec(path) == spec


@pytest.mark.parametrize("length", [128, 384, 19280])
def test_a_header_length_that_looks_like_pickle_or_zip_is_still_safetensors(
        tmp_path: Path, length: int) -> None:
    """A header of 128 + 256 k bytes starts the file with 0x80, of 19280 with ``PK``."""
    import struct

    from volseg.models.files import _read_header

    raw = json.dumps({"__metadata__": {"x": ""}})
    raw = raw[:-3] + "a" * (length - len(raw)) + raw[-3:]
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", length) + raw.encode())
    assert list(_read_header(path)) == ["__metadata__"]
